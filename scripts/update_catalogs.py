#!/usr/bin/env python
"""Extract the marked messages, update the en and zh_CN catalogs, compile them to .mo.

    .venv/bin/python scripts/update_catalogs.py

Run it after adding or changing a message, translate what it lists as left to do in
zhiyin/locale/zh_CN/LC_MESSAGES/zhiyin.po (empty or fuzzy entries), then run it again to
compile; commit the .po and .mo files together (tests/test_i18n.py checks all of that).
English is the source language: en msgstrs are copies of their msgids.

The same with Babel's command line (same files out; the .pot is a throwaway):

    .venv/bin/pybabel extract -F babel.cfg --no-default-keywords -k _ -k N_ -k ngettext:1,2 \
        -c TRANSLATORS: --strip-comment-tags --add-location file -o /tmp/zhiyin.pot \
        engine indexer engram lsp_server zhiyin
    .venv/bin/pybabel update -i /tmp/zhiyin.pot -d zhiyin/locale -D zhiyin \
        --ignore-obsolete --ignore-pot-creation-date
    .venv/bin/pybabel compile -d zhiyin/locale -D zhiyin --statistics
"""

from __future__ import annotations

import copy
import datetime
import tomllib
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "indexer", "engram", "lsp_server", "zhiyin")
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
COMMENT_TAGS = ("TRANSLATORS:",)
DOMAIN = "zhiyin"
LOCALE_DIR = ROOT / "zhiyin" / "locale"
LOCALES = ("en", "zh_CN")


def po_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


def new_catalog(locale: str | None = None) -> Catalog:
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    return Catalog(
        locale=locale, domain=DOMAIN, project="Zhiyin", version=version, charset="utf-8",
        header_comment=f"# {locale or 'Template'} messages of Zhiyin (知音).",
        copyright_holder="Zhiyin contributors", last_translator="Zhiyin contributors",
        language_team="Zhiyin", revision_date=datetime.datetime.now(datetime.timezone.utc),
        fuzzy=False,
    )


def extract() -> Catalog:
    """Every marked message in the Python packages, as a template catalog."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    template = new_catalog()
    for package in PACKAGES:
        if not (ROOT / package).is_dir():
            continue
        found = extract_from_dir(ROOT / package, method_map, options_map, KEYWORDS, COMMENT_TAGS,
                                 strip_comment_tags=True)
        for filename, lineno, message, comments, context in found:
            template.add(message, locations=[(f"{package}/{filename}", lineno)],
                         auto_comments=comments, context=context)
    return template


def read_catalog(locale: str) -> Catalog:
    with open(po_path(locale), "rb") as f:
        return read_po(f, locale=locale, domain=DOMAIN)


def todo(template: Catalog, catalog: Catalog) -> list[str]:
    """The template's msgids that the catalog lacks, leaves (partly) empty or marks fuzzy."""
    left = []
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id, message.context)
        if found is None or found.fuzzy or not all(as_tuple(found.string)):
            left.append(as_tuple(message.id)[0])
    return left


def as_tuple(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """A message's id or string as a tuple: one item, or the plural forms."""
    return text if isinstance(text, tuple) else (text,)


def update(template: Catalog, locale: str) -> Catalog:
    """Merge the template into the locale's .po (created if missing) and write it back."""
    catalog = read_catalog(locale) if po_path(locale).exists() else new_catalog(locale)
    # A copy: update() shares the template's Message objects, and en rewrites their msgstrs.
    catalog.update(copy.deepcopy(template), no_fuzzy_matching=locale == "en", update_creation_date=False)
    if locale == "en":  # the source language: every msgstr is its msgid, so no entry reads as missing
        for message in catalog:
            if message.id:
                message.string = message.id
                message.flags.discard("fuzzy")
    po_path(locale).parent.mkdir(parents=True, exist_ok=True)
    with open(po_path(locale), "wb") as f:
        # no line numbers: moving code around should not touch the catalogs
        write_po(f, catalog, ignore_obsolete=True, include_lineno=False)
    return catalog


def main() -> None:
    template = extract()
    for locale in LOCALES:
        catalog = update(template, locale)
        with open(po_path(locale).with_suffix(".mo"), "wb") as f:
            write_mo(f, catalog)
        if locale != "en" and (left := todo(template, catalog)):
            print(f"{locale}: {len(left)} to translate in {po_path(locale).relative_to(ROOT)}:")
            print("".join(f"  {msgid!r}\n" for msgid in left), end="")
    print(f"{len(template)} messages; catalogs updated and compiled")


if __name__ == "__main__":
    main()
