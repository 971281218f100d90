"""Repository edits in the app core: the plan, its checks, renames and the model's SEARCH/REPLACE blocks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zhiyin.edit_planner import (
    identifier_spans,
    parse_rename,
    rename_plan,
    search_replace_spans,
)
from zhiyin.edits import EditPlan, FileEdit, Replacement, check_plan, text_hash

SAMPLE_REPO = Path(__file__).parent / "indexer" / "sample_repo"


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize(("instruction", "expected"), [
    ("rename `load_cfg` to `load_config` and update every caller", ("load_cfg", "load_config")),
    ("Rename the function parse_args to parse_argv", ("parse_args", "parse_argv")),
    ("把 load_cfg 重命名为 load_config", ("load_cfg", "load_config")),
    ("将`OrderStore`改名成`OrderRepository`", ("OrderStore", "OrderRepository")),
    ("add type hints to the public functions in utils/", None),
])
def test_rename_instructions_are_recognised(instruction: str, expected) -> None:
    assert parse_rename(instruction) == expected


def test_identifier_spans_skip_strings_and_comments() -> None:
    text = '# load_cfg reads it\nfrom cfg import load_cfg\nx = load_cfg("load_cfg")  # 配置 load_cfg\nload_cfg_old = 1\n'
    spans = identifier_spans(text, "python", "load_cfg")
    assert [text[s:e] for s, e in spans] == ["load_cfg", "load_cfg"]
    assert [text.count("\n", 0, s) for s, _ in spans] == [1, 2]
    # code point offsets, not bytes: a CJK comment before does not shift them
    text = "# 中文注释\nload_cfg()\n"
    assert identifier_spans(text, "python", "load_cfg") == [(text.index("load_cfg"), text.index("load_cfg") + 8)]


def test_search_replace_blocks_must_match_exactly_once() -> None:
    text = "a = 1\nb = 2\nb = 2\n"
    answer = "<<<<<<< SEARCH\na = 1\n=======\na = 10\n>>>>>>> REPLACE"
    assert search_replace_spans(text, answer) == [Replacement(0, 5, "a = 10")]
    assert search_replace_spans(text, answer.replace("a = 1\n===", "b = 2\n===")) is None  # twice
    assert search_replace_spans(text, answer.replace("a = 1\n===", "c = 3\n===")) is None  # absent
    assert search_replace_spans(text, "I would change a to 10.") == []


def test_checks_refuse_changed_escaping_overlapping_and_unparsable_edits(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    outside = tmp_path / "outside.py"
    outside.write_text("x = 1\n")
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    good = root / "pkg" / "good.py"
    good.write_text("def f():\n    return 1\n")
    text = read(good)
    plan = EditPlan("test", [
        FileEdit("pkg/good.py", text_hash(text), (Replacement(text.index("1"), text.index("1") + 1, "2"),)),
        FileEdit("../outside.py", text_hash("x = 1\n"), (Replacement(4, 5, "2"),)),
        FileEdit("link/outside.py", text_hash("x = 1\n"), (Replacement(4, 5, "2"),)),
        FileEdit(str(outside), text_hash("x = 1\n"), (Replacement(4, 5, "2"),)),
    ])
    checked, problems = check_plan(plan, root, read)
    assert [c.edit.path for c in checked] == ["pkg/good.py"]
    assert checked[0].new_text == "def f():\n    return 2\n"
    assert set(problems) == {"../outside.py", "link/outside.py", str(outside)}
    assert all("outside the workspace" in why for why in problems.values())

    good.write_text("def f():\n    return 3\n")  # changed after the plan was made
    _checked, problems = check_plan(EditPlan("t", plan.edits[:1]), root, read)
    assert "changed" in problems["pkg/good.py"]

    text = read(good)
    broken = FileEdit("pkg/good.py", text_hash(text), (Replacement(0, 3, "fed"),))  # "fed f():"
    overlapping = FileEdit("pkg/good.py", text_hash(text), (Replacement(0, 5, "x"), Replacement(3, 6, "y")))
    beyond = FileEdit("pkg/good.py", text_hash(text), (Replacement(0, len(text) + 5, ""),))
    for edit, why in ((broken, "parse"), (overlapping, "overlap"), (beyond, "outside the file")):
        _checked, problems = check_plan(EditPlan("t", [edit]), root, read)
        assert why in problems["pkg/good.py"]


def test_plan_survives_a_json_round_trip_and_garbage_is_refused() -> None:
    plan = EditPlan("rename a to b", [FileEdit("a.py", "h", (Replacement(0, 1, "b"),))], {"c.py": "why"})
    assert EditPlan.from_json(plan.to_json()) == plan
    for garbage in (None, [], {"edits": [{"path": "a.py"}]}, {"edits": [{"path": 1, "baseHash": "h",
                                                                           "replacements": [[0, "x"]]}]}):
        with pytest.raises(ValueError):
            EditPlan.from_json(garbage)


def test_rename_plan_edits_every_file_that_names_the_symbol(tmp_path: Path, default_count_tokens) -> None:
    from indexer.index import Index

    root = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, root)
    index = Index.open(root, db_path=tmp_path / "index.db", count_tokens=default_count_tokens, embedder=None)
    index.update()
    plan = rename_plan("rename Settings to ShopSettings", "Settings", "ShopSettings", root, index, read)
    assert sorted(e.path for e in plan.edits) == ["shop/config.py", "shop/db.py"]
    checked, problems = check_plan(plan, root, read)
    assert not problems
    for c in checked:
        assert "ShopSettings" in c.new_text and "Settings(" not in c.new_text.replace("ShopSettings(", "")
    assert "nothing named" in rename_plan("rename Nope to Yes", "Nope", "Yes", root, index, read).problems["Nope"]
