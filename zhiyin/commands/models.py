"""`zhiyin model list`: the models Zhiyin knows and where their files are."""

import argparse

from rich.console import Console
from rich.table import Table

from engine.model_files import known_models
from zhiyin.config import load_config
from zhiyin.i18n import N_, _

SOURCE_LABELS = {"default": N_("default model"), "config": N_("configuration"), "models_dir": N_("models folder")}


def run_model_list(args: argparse.Namespace) -> int:
    config = load_config()
    table = Table(box=None)
    table.add_column(_("name"))
    table.add_column(_("from"))
    table.add_column(_("file"), overflow="fold")
    for entry in known_models(config.models, config.models_dirs):
        name = entry.name + (" *" if entry.name == (config.model or "smollm2-135m-instruct") else "")
        where = str(entry.path) if entry.is_available else _("not installed")
        table.add_row(name, _(SOURCE_LABELS[entry.source]), where)
    Console(soft_wrap=True).print(table)
    print(_("* the model used when none is named (set `model` in {path})").format(path=config.sources[-1] if config.sources else "~/.config/zhiyin/config.toml"))
    return 0
