"""`zhiyin index`, `zhiyin search`, `zhiyin map` as a user runs them, in both languages."""

import json
import shutil
from pathlib import Path

import pytest

from tests.test_cli import CJK, assert_one_line_error, zhiyin

SAMPLE = Path(__file__).parent / "indexer" / "sample_repo"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    shutil.copytree(SAMPLE, root)
    (root / ".git").mkdir()  # a work tree: commands run inside it find its root
    return root


def run(repo: Path, *args: str, lang: str = "en"):
    env = {"XDG_CACHE_HOME": str(repo.parent / "cache")}
    return zhiyin(*args, lang=lang, env=env, tmp_home=repo.parent / "config")


@pytest.mark.slow
def test_index_search_map_with_embeddings(repo: Path) -> None:
    first = run(repo, "index", str(repo))
    assert first.returncode == 0, first.stderr
    assert any(line.split() == ["7", "files"] for line in first.stdout.splitlines())
    assert "Index up to date" in first.stdout
    again = run(repo, "index", str(repo), lang="zh_CN")
    assert again.returncode == 0 and "索引已是最新" in again.stdout

    found = run(repo, "search", "加载配置文件", "--repo", str(repo), "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    hit = json.loads(found.stdout.splitlines()[0])
    assert (hit["path"], hit["symbol"]) == ("shop/config.py", "load_config")

    shown = run(repo, "map", "--repo", str(repo), "--budget", "200")
    assert shown.returncode == 0 and "class Database" in shown.stdout


def test_search_without_embeddings_and_filters(repo: Path) -> None:
    assert run(repo, "index", str(repo), "--no-embeddings").returncode == 0
    found = run(repo, "search", "fetchJson", "--repo", str(repo), "--no-embeddings", "--lang", "typescript")
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("web/http.ts:")
    only_shop = run(repo, "search", "fetchJson", "--repo", str(repo), "--no-embeddings", "--path", "shop/", "--json")
    assert only_shop.stdout and all(json.loads(line)["path"].startswith("shop/") for line in only_shop.stdout.splitlines())
    none = run(repo, "search", "qzxv", "--repo", str(repo), "--no-embeddings", lang="zh_CN")
    assert none.returncode == 1 and CJK.search(none.stderr)


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_index_of_a_file_is_a_clear_error(repo: Path, lang: str) -> None:
    result = run(repo, "index", str(repo / "README.md"), lang=lang)
    assert_one_line_error(result, lang, "README.md")


def test_map_of_an_unindexed_repository_says_what_to_do(repo: Path) -> None:
    result = run(repo, "map", "--repo", str(repo))
    assert result.returncode == 1 and "zhiyin index" in result.stderr
