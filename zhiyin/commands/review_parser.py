"""The arguments of `zhiyin review` (apart from the command: `zhiyin --help` must stay light)."""

from __future__ import annotations

import argparse

from zhiyin.findings import FORMATS, SEVERITIES
from zhiyin.i18n import _


def add_parser(verbs: argparse._SubParsersAction, bounded, add_repo_argument) -> None:
    parser = verbs.add_parser(
        "review", help=_("Review a change: project conventions, past bugs coming back."),
        description=_("Review the change between --base and --head (default: the merge base with the default "
                      "branch, and HEAD), or the staged or uncommitted changes. Exit code 1 when findings reach "
                      "--fail-on, 2 on a usage or environment error."))
    parser.add_argument("--base", default=None, help=_("compare with this commit (default: the merge base)"))
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--head", default=None, help=_("the commit under review (default: HEAD)"))
    what.add_argument("--staged", action="store_true", help=_("review the staged changes"))
    what.add_argument("--worktree", action="store_true", help=_("review the uncommitted changes"))
    parser.add_argument("--format", choices=FORMATS, default="text", help=_("default: %(default)s"))
    parser.add_argument("--output", "-o", default=None, help=_("write the report here (default: standard output)"))
    parser.add_argument("--fail-on", choices=SEVERITIES, default="warning",
                        help=_("exit 1 when a finding is at least this severe (default: %(default)s)"))
    parser.add_argument("--lang", choices=["zh-CN", "en"], default=None, help=_("language of the report"))
    parser.add_argument("--max-seconds", type=bounded(float, 0, low_open=True), default=None,
                        help=_("stop reviewing files after this long; the rest is reported as skipped"))
    parser.add_argument("--no-memory", action="store_true", help=_("do not read the project memory"))
    parser.add_argument("--with-model", action="store_true",
                        help=_("also let the model review each changed hunk (slow on a CPU; worth it with a "
                               "bigger model than the default)"))
    parser.add_argument("--model", "-m", default=None, help=_("the model for --with-model (default: the configured one)"))
    parser.add_argument("--learn", action="store_true",
                        help=_("afterwards, remember the change's fix commits as pending fix memories"))
    add_repo_argument(parser)
