"""The repo map: the definitions the rest of the repository leans on most, fitted to a token budget.

Files are nodes; file B → file A with weight w when B references a name A defines. Personalised
PageRank (towards the files in focus) ranks files; each file's rank flows along its out-edges to
the definitions it uses, which ranks definitions. Then a binary search finds how many of the top
definitions fit the budget, rendered as their signature lines grouped by file.
"""

from __future__ import annotations

import math
from collections import defaultdict

import networkx as nx

from indexer.records import TokenCounter
from indexer.store import Definition, Store

_KINDS_SHOWN = frozenset({
    "function", "method", "class", "interface", "struct", "enum", "type", "trait", "module", "macro", "constant",
})


def rank_definitions(
    store: Store, focus: tuple[str, ...] = (), mentioned: tuple[str, ...] = ()
) -> list[Definition]:
    definers: dict[str, set[str]] = defaultdict(set)
    by_key: dict[tuple[str, str], list[Definition]] = defaultdict(list)
    everything = list(store.all_definitions())
    functions = {(d.path, d.name) for d in everything if d.kind in ("function", "method") and not d.scope}
    for d in everything:
        # Names local to a function body are not part of what the repository offers.
        if d.kind in _KINDS_SHOWN and (d.path, d.scope.split(".")[0]) not in functions:
            definers[d.name].add(d.path)
            by_key[(d.path, d.name)].append(d)

    methods_only = {name for name, paths in definers.items()
                    if all(d.scope for p in paths for d in by_key[(p, name)])}
    references = list(store.all_references())
    files_using: dict[str, int] = defaultdict(int)
    for _, name, _ in references:
        files_using[name] += 1
    num_files = len({path for path, _, _ in references}) or 1
    graph = nx.MultiDiGraph()
    graph.add_nodes_from({path for path, _ in by_key})
    # A file's rank flows out over all the names it uses, also those defined outside the repository
    # (`dict.get`, `os.path.join`): a file that mostly calls the stdlib lends little to a `get` of ours.
    outflow: dict[str, float] = defaultdict(float)
    for path, name, count in references:
        targets = definers.get(name, ())
        idf = math.log1p(num_files / files_using[name])  # `get` is used everywhere, `load_config` is not
        weight = idf * _edge_weight(name, count, mentioned, len(targets), name in methods_only)
        outflow[path] += weight
        if path in targets:
            continue  # the name resolves to the file's own definition
        for definer in targets:
            graph.add_edge(path, definer, name=name, weight=weight)
    if graph.number_of_nodes() == 0:
        return []
    personalization = {p: 1.0 for p in focus if p in graph} or None
    try:
        file_rank = nx.pagerank(graph, weight="weight", personalization=personalization)
    except nx.PowerIterationFailedConvergence:
        file_rank = {n: 1.0 / graph.number_of_nodes() for n in graph}

    def_rank: dict[tuple[str, str], float] = defaultdict(float)
    for src in graph:
        for _, dst, data in graph.out_edges(src, data=True):
            def_rank[(dst, data["name"])] += file_rank[src] * data["weight"] / outflow[src]
    # Definitions nobody references still belong on the map, after the rest, by their file's rank.
    order = sorted(by_key, key=lambda key: (-def_rank.get(key, 0.0), -file_rank.get(key[0], 0.0), key))
    return [d for key in order for d in sorted(by_key[key], key=lambda d: d.line)]


def render_repo_map(
    store: Store, budget_tokens: int, count_tokens: TokenCounter,
    focus: tuple[str, ...] = (), mentioned: tuple[str, ...] = (),
) -> str:
    ranked = rank_definitions(store, focus, mentioned)
    ranked = [d for d in ranked if d.path not in focus]  # the focus files are in the prompt whole
    owners = {(d.path, d.name): d for d in ranked if not d.scope}
    if not ranked or budget_tokens <= 0:
        return ""
    low, high, best = 1, len(ranked), ""
    while low <= high:
        mid = (low + high) // 2
        text = _render(ranked[:mid], owners)
        if count_tokens([text])[0] <= budget_tokens:
            best, low = text, mid + 1
        else:
            high = mid - 1
    return best


def _edge_weight(name: str, count: int, mentioned: tuple[str, ...], num_definers: int, method: bool) -> float:
    weight = math.sqrt(count)
    if num_definers > 5:  # a name defined all over says little about which definition is meant
        weight *= 0.1
    if method:  # `x.get()` matches every `get` method: the call may well be to dict.get
        weight *= 0.3
    if name in mentioned:
        weight *= 10
    if name.startswith("_"):
        weight *= 0.1
    if len(name) < 4:  # `get`, `run`, `id`: defined everywhere, says little
        weight *= 0.3
    return weight


def _render(definitions: list[Definition], owners: dict[tuple[str, str], Definition]) -> str:
    """Signature lines grouped by file; a method comes with its class's line."""
    by_file: dict[str, set[Definition]] = defaultdict(set)
    for d in definitions:
        by_file[d.path].add(d)
        if d.scope and (owner := owners.get((d.path, d.scope.split(".")[0]))):
            by_file[d.path].add(owner)
    blocks = []
    for path in sorted(by_file):
        lines = [f"{path}:"]
        for d in sorted(by_file[path], key=lambda d: d.line):
            depth = d.scope.count(".") + 1 if d.scope else 0
            lines.append(f"{d.line:>5}│ {'    ' * depth}{d.signature or d.name}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
