"""`zhiyin adapt`: fine-tune the local model on a repository; the figures it reached."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.model_files import adapters_dir, resolve_model
from zhiyin.adaptation import AdaptSettings, adapt, open_training_engine
from zhiyin.config import load_config
from zhiyin.i18n import _
from zhiyin.progress import ProgressBoard
from zhiyin.runtime import repository_root


def run_adapt(args: argparse.Namespace) -> int:
    root = Path(args.path).expanduser().resolve() if args.path else repository_root(None)
    config = load_config(root)
    model_path = resolve_model(args.model or config.model, config.models, config.models_dirs)
    name = args.name or root.name
    adapter_path = adapters_dir(model_path) / f"{name}.safetensors"
    settings = AdaptSettings(minutes=args.minutes if args.steps is None else None, steps=args.steps,
                             seq_len=args.seq_len, batch=args.batch, rank=args.rank, residual=args.residual,
                             seed=args.seed, learning_rate=args.learning_rate, max_memory_mib=args.max_memory_mib)
    board = ProgressBoard(terminal=sys.stderr.isatty() and not args.json)
    token = board.begin(_("Adapting the model to {name}").format(name=name))
    try:
        engine = open_training_engine(model_path, args.threads)
        board.report(token, _("reading the repository"))
        result = adapt(root, engine, adapter_path, settings, restart=args.restart,
                       progress=lambda step, loss, seconds, percentage: board.report(
                           token, _("step {step}, loss {loss:.3f}").format(step=step, loss=loss), percentage))
    except KeyboardInterrupt:
        board.end(token)
        print(_("Interrupted. Run the same command again to resume from the last checkpoint."), file=sys.stderr)
        raise
    board.end(token, _("done"))
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
        return 0
    table = Table(box=None, show_header=False)
    table.add_column(justify="right")
    table.add_column()
    gain = 1 - result.bits_per_byte_after / result.bits_per_byte_before
    rows = [
        (_("adapter"), str(result.adapter_path)),
        (_("files"), _("{train} trained on, {held} held out").format(train=result.train_files,
                                                                    held=result.validation_files)),
        (_("steps"), _("{steps} ({seconds:.0f} s, {tokens:,} tokens)").format(
            steps=result.steps, seconds=result.train_seconds, tokens=result.train_tokens)),
        (_("held-out bits/byte"), _("{before:.3f} → {after:.3f} ({gain:+.1%})").format(
            before=result.bits_per_byte_before, after=result.bits_per_byte_after, gain=-gain)),
    ]
    if result.resumed_from:
        rows.append((_("resumed"), _("from step {step}").format(step=result.resumed_from)))
    if args.residual == "mhc":
        scales = result.residual_scales
        rows.append((_("residual scales"), _("attention {attention}; MLP {mlp}").format(
            attention=" ".join(f"{a:.2f}" for a, _m in scales), mlp=" ".join(f"{m:.2f}" for _a, m in scales))))
    for label, value in rows:
        table.add_row(label, value)
    Console(soft_wrap=True).print(table)
    print(_("To use it, set `adapter = \"{name}\"` under [engine] in {path}, or pass --adapter {name}.").format(
        name=name, path=root / ".zhiyin.toml"))
    return 0
