"""The repo map of the sample repository: a golden file, budgets and focus."""

import shutil
from pathlib import Path

import pytest

from indexer.index import Index

SAMPLE = Path(__file__).parent / "sample_repo"
GOLDEN = Path(__file__).parent / "golden" / "sample_repo.map.txt"


@pytest.fixture(scope="module")
def index(tmp_path_factory, default_count_tokens) -> Index:
    root = tmp_path_factory.mktemp("map") / "shop"
    shutil.copytree(SAMPLE, root)
    index = Index.open(root, db_path=root.parent / "index.db", count_tokens=default_count_tokens, embedder=None)
    index.update()
    return index


def test_golden_map(index: Index, request) -> None:
    text = index.repo_map(400)
    if request.config.getoption("--update-golden", default=False):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_budget_is_respected_and_keeps_the_most_used_definitions(index: Index, default_count_tokens) -> None:
    for budget in (30, 60, 120, 400):
        text = index.repo_map(budget)
        assert default_count_tokens([text])[0] <= budget
    small = index.repo_map(60)
    # Database is what orders.py leans on (3 uses), fetchJson what client.ts calls: they lead.
    assert "class Database" in small and "fetchJson" in small
    assert "def load_config" in index.repo_map(120)
    assert "order_total" not in small  # nobody calls it


def test_focus_pulls_the_map_towards_the_file_being_edited(index: Index) -> None:
    focused = index.repo_map(60, focus=("web/client.ts",))
    assert "fetchJson" in focused and "web/client.ts" not in focused
    assert "load_config" not in focused
