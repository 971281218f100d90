"""The arguments of `zhiyin adapt` (apart from the command: `zhiyin --help` must stay light)."""

from __future__ import annotations

import argparse

from zhiyin.i18n import _


def add_parser(verbs: argparse._SubParsersAction, bounded) -> None:
    parser = verbs.add_parser(
        "adapt", help=_("Fine-tune the local model on a repository (an adapter beside the base model)."),
        description=_("Continue training the local model on the repository's own code, so completions use its "
                      "names and idioms. Files the indexer ignores are never read; secrets are redacted; a share "
                      "of the files is held out to measure the gain. The result is an adapter: the base model "
                      "stays untouched. Interrupted runs resume where their last checkpoint left off."))
    parser.add_argument("path", nargs="?", default=None,
                        help=_("the repository (default: the git work tree around the current folder)"))
    parser.add_argument("--model", "-m", default=None,
                        help=_("model name from `zhiyin model list`, or a GGUF file or Hugging Face folder"))
    parser.add_argument("--name", default=None, help=_("the adapter's name (default: the repository folder's name)"))
    parser.add_argument("--minutes", type=bounded(float, 0, low_open=True), default=20.0,
                        help=_("training time in minutes (default: %(default)s)"))
    parser.add_argument("--steps", type=bounded(int, 1), default=None, help=_("stop after this many steps"))
    parser.add_argument("--residual", choices=["mhc", "plain"], default="mhc",
                        help=_("mhc: a learnable scale on every residual branch; plain: LoRA only "
                               "(default: %(default)s)"))
    parser.add_argument("--rank", type=bounded(int, 1), default=16, help=_("LoRA rank (default: %(default)s)"))
    parser.add_argument("--seq-len", type=bounded(int, 16), default=256,
                        help=_("tokens per training window (default: %(default)s)"))
    parser.add_argument("--batch", type=bounded(int, 1), default=4, help=_("windows per step (default: %(default)s)"))
    parser.add_argument("--learning-rate", type=bounded(float, 0, low_open=True), default=1e-3,
                        help=_("default: %(default)s"))
    parser.add_argument("--seed", type=int, default=0, help=_("default: %(default)s"))
    parser.add_argument("--max-memory-mib", type=bounded(int, 256), default=8192,
                        help=_("memory budget: gradient checkpointing, then smaller batches, to stay under it "
                               "(default: %(default)s)"))
    parser.add_argument("--restart", action="store_true", help=_("discard an unfinished run instead of resuming it"))
    parser.add_argument("--threads", type=bounded(int, 1), default=None, help=_("CPU threads (default: all cores)"))
    parser.add_argument("--json", action="store_true", help=_("print the figures as JSON"))
