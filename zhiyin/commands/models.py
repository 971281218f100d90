"""`zhiyin model list`: the models Zhiyin knows, their repository adapters, and where their files are.
Deleting an adapter's file removes it: the base model is never changed."""

import argparse

from rich.console import Console
from rich.table import Table

from engine.adapter import AdapterFileError, read_adapter_info
from engine.model_files import known_adapters, known_models
from zhiyin.config import load_config
from zhiyin.i18n import N_, _

SOURCE_LABELS = {"default": N_("default model"), "config": N_("configuration"), "models_dir": N_("models folder")}


def adapter_summary(path) -> str:
    """What `zhiyin adapt` reached with this adapter, in one line."""
    try:
        info = read_adapter_info(path)
    except AdapterFileError:
        return _("damaged: delete it and run `zhiyin adapt` again")
    report = info.report
    if "bits_per_byte_before" not in report:
        return _("adapter ({residual})").format(residual=info.config.residual)
    return _("adapter ({residual}, {steps} steps): held-out bits/byte {before:.3f} → {after:.3f}").format(
        residual=info.config.residual, steps=report.get("steps", 0), before=report["bits_per_byte_before"],
        after=report["bits_per_byte_after"])


def run_model_list(args: argparse.Namespace) -> int:
    config = load_config()
    table = Table(box=None)
    table.add_column(_("name"))
    table.add_column(_("from"))
    table.add_column(_("file"), overflow="fold")
    entries = known_models(config.models, config.models_dirs)
    for entry in entries:
        name = entry.name + (" *" if entry.name == (config.model or "smollm2-135m-instruct") else "")
        where = str(entry.path) if entry.is_available else _("not installed")
        table.add_row(name, _(SOURCE_LABELS[entry.source]), where)
        for adapter in known_adapters(entry.path) if entry.is_available else []:
            table.add_row(f"  + {adapter.stem}", adapter_summary(adapter), str(adapter))
    Console(soft_wrap=True).print(table)
    if any(known_adapters(e.path) for e in entries if e.is_available):
        print(_("+ a repository adapter from `zhiyin adapt`; delete its file to remove it"))
    print(_("* the model used when none is named (set `model` in {path})").format(path=config.sources[-1] if config.sources else "~/.config/zhiyin/config.toml"))
    return 0
