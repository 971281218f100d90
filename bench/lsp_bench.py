"""Inline-completion latency of the real language server while someone types (issue 6).

The server runs for real (`python -m lsp_server` over stdio, the default model, OMP_NUM_THREADS=2)
on a copy of a real repository (wechatpy from PyPI, bench/corpora.py; 16k lines, indexed without
embeddings unless --embeddings); the client is pygls's LanguageClient driven the way an editor
drives it.

Phases:
- cold: didOpen, then one inline request while the model loads and the repository is indexed
  (`cold_first_completion_s`); the replay waits for the index to finish;
- typing replay: a stretch of a function body (the fewest lines from 5 worth --keystrokes keys: 5–8
  for the default) is deleted from the file (on disk too: the index must not know it), and its
  first --keystrokes keys are typed back one by one at human pace (seeded delays, median ~180 ms:
  lognormal, fast bursts, thinking pauses after `(`, `.`, `=`, `,`, 1–2 s pauses at line ends).
  Enter inserts the newline and the next line's indentation in one change, as an auto-indenting
  editor does (brackets are not auto-closed). Each key sends an incremental didChange, then an
  inline request at the new cursor, without waiting for the answer; a request still pending when
  the next key comes is cancelled with `$/cancelRequest`, as VS Code does. The latency targets
  count single-line items answered to requests not cancelled;
- burst: a misbehaving client sends a key and a request every 50 ms for --burst-seconds and never
  cancels. The last request must be answered; earlier ones should be dropped, not queued: an
  answer with an item more than 1 s after a newer request was sent is stale work. The server's
  RSS before, at the end and 5 s after tells whether memory returns to its baseline.

`zhiyin/stats` (the server's counters) is asked before and after each phase; a server without it
gives null. Its deltas give the share of requests answered from the cache or an in-flight
generation, and the share of prompt tokens reused from a cached prefix.

    python bench/lsp_bench.py               # ~3 minutes on 2 cores
    python bench/lsp_bench.py --quick       # 40 keys, a 5 s burst: a smoke run

The last line of standard output is one JSON object (see ../shared/DESIGN.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import corpora
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcMethodNotFound,
    JsonRpcRequestCancelled,
)
from pygls.lsp.client import LanguageClient

from bench.machine import machine

SERVER_COMMAND = [sys.executable, "-m", "lsp_server"]
DEFAULT_KEYS = 240
TARGETS = {"single_line_p50_ms": ["<=", 400], "single_line_p95_ms": ["<=", 900]}
STATS_METHOD = "zhiyin/stats"
FILE_LINES = (200, 800)  # "a file of a few hundred lines"
REGION_LINES = (5, 8)  # lines of a function body deleted and retyped
BURST_RATE = 20  # requests per second
INSTANT_MS = 20  # an answer faster than this came from the cache, not a model run
STALE_AFTER_S = 1.0  # an item answered this long after a newer request was sent is stale work
SETTLE_S = 5.0  # after the burst, before memory is read again
ANSWER_TIMEOUT_S = 300.0  # for the cold request (model load on a busy machine), the last ones, stragglers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank on the sorted values, as bench/index_bench.py does; None without any."""
    if not values:
        return None
    values = sorted(values)
    return round(values[int(q * (len(values) - 1))], 1)


# --- what is typed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    path: str  # relative to the repository root
    function: str
    first_line: int  # 0-based
    lines: list[str]
    keys: list[str]  # all of `lines`, one string per key: a character, or "\n" + the next line's indentation


def indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def keys_for(lines: list[str]) -> list[str]:
    """The keys that retype `lines` from the end of the first line's indentation."""
    keys = list(lines[0].lstrip())
    for line in lines[1:]:
        keys.append("\n" + indentation(line))  # Enter: the editor indents the new line
        keys.extend(line.lstrip())
    return keys


def pick_region(corpus: corpora.Corpus, min_keys: int, rng: random.Random) -> Region:
    """A seeded choice among statement-starting stretches of function bodies (docstrings left out)
    in files of FILE_LINES lines, each the fewest lines (REGION_LINES) worth `min_keys` keys."""
    candidates: list[Region] = []
    for max_lines in (REGION_LINES[1], 40):  # a --keystrokes beyond 8 lines' worth takes more lines
        for rel in corpus.files():
            source = (corpus.root / rel).read_text(encoding="utf-8")
            lines = source.split("\n")
            if not FILE_LINES[0] <= len(lines) <= FILE_LINES[1]:
                continue
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]  # the docstring
                if not body:
                    continue
                end = node.end_lineno  # 1-based, inclusive
                starts = sorted({s.lineno for b in body for s in ast.walk(b) if isinstance(s, ast.stmt)})
                for start in starts:
                    for n in range(REGION_LINES[0], max_lines + 1):
                        if start - 1 + n > end:
                            break
                        chosen = lines[start - 1 : start - 1 + n]
                        if len(keys_for(chosen)) >= min_keys:
                            candidates.append(Region(rel, node.name, start - 1, chosen, keys_for(chosen)))
                            break
        if candidates:
            break
    if not candidates:
        raise SystemExit(f"no function body in {corpus.name} gives {min_keys} keys")
    candidates.sort(key=lambda r: (r.path, r.first_line))
    return rng.choice(candidates)


def key_delays(keys: list[str], rng: random.Random) -> list[float]:
    """Seconds before each key: lognormal around 200 ms, bursts of fast keys (~80 ms; the median of
    all is ~180 ms), thinking pauses after punctuation, 1–2 s pauses at half the line ends (before Enter)."""
    delays, burst = [], 0
    for i, key in enumerate(keys):
        previous = keys[i - 1] if i else ""
        if key.startswith("\n") and rng.random() < 0.5:
            delay = rng.uniform(1.0, 2.0)
        elif previous in ("(", ".", "=", ",") and rng.random() < 0.2:
            delay = rng.uniform(0.4, 1.0)
        elif burst or rng.random() < 0.05:
            burst = burst - 1 if burst else rng.randint(3, 8)
            delay = rng.lognormvariate(math.log(0.08), 0.3)
        else:
            delay = rng.lognormvariate(math.log(0.2), 0.5)
        delays.append(min(max(delay, 0.03), 2.0))
    return delays


# --- the client -----------------------------------------------------------------------------------


@dataclass
class Request:
    msg_id: str
    sent: float  # perf_counter seconds
    superseded: float | None = None  # when a newer request was sent
    cancelled: bool = False  # we sent $/cancelRequest
    answered: float | None = None
    outcome: str | None = None  # items, empty, cancelled (RequestCancelled error), error
    text: str | None = None
    future: asyncio.Future | None = field(default=None, repr=False)

    @property
    def latency_ms(self) -> float | None:
        return None if self.answered is None else (self.answered - self.sent) * 1000

    @property
    def single_line(self) -> bool:
        # a trailing newline (and the next line's indentation) still shows as one line of ghost text
        return self.text is not None and "\n" not in self.text.rstrip()


class Editor:
    """One open document, typed into at a moving cursor (`line`, `column` in code points, 0-based);
    the server is sent positions in UTF-16 units."""

    def __init__(self, client: LanguageClient, uri: str, text: str, line: int, column: int) -> None:
        self.client, self.uri, self.text = client, uri, text
        self.version = 1
        rows = text.split("\n")
        self.line, self.line_prefix = line, rows[line][:column]
        self.offset = sum(len(row) + 1 for row in rows[:line]) + column
        self.requests: list[Request] = []
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))

    @property
    def position(self) -> types.Position:
        return types.Position(line=self.line, character=len(self.line_prefix.encode("utf-16-le")) // 2)

    def type(self, key: str) -> None:
        at = self.position
        self.version += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=key)]))
        self.text = self.text[: self.offset] + key + self.text[self.offset :]
        self.offset += len(key)
        if "\n" in key:
            self.line += key.count("\n")
            self.line_prefix = key.rsplit("\n", 1)[1]
        else:
            self.line_prefix += key

    def request(self, *, cancel_previous: bool) -> Request:
        now = time.perf_counter()
        for older in self.requests[-1:]:
            older.superseded = now
            if cancel_previous and older.answered is None:
                older.cancelled = True
                self.client.cancel_request(types.CancelParams(id=older.msg_id))
        request = Request(msg_id=f"inline-{len(self.requests)}", sent=now)
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=self.uri), position=self.position,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        request.future = self.client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=request.msg_id)
        request.future.add_done_callback(lambda f, r=request: answered(r, f))
        self.requests.append(request)
        return request


def answered(request: Request, future: asyncio.Future) -> None:
    request.answered = time.perf_counter()
    error = future.exception()
    if isinstance(error, JsonRpcRequestCancelled):
        request.outcome = "cancelled"
    elif error is not None:
        request.outcome = "error"
        log(f"  {request.msg_id}: {type(error).__name__}: {error}")
    else:
        result = future.result()
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        request.outcome = "items" if items else "empty"
        if items:
            text = items[0].insert_text
            request.text = text if isinstance(text, str) else text.value


def write_trace(path: Path, requests: list[Request]) -> None:
    """Every request, times in ms from the first one: for looking at what the summary hides."""
    if not requests:
        return
    zero = requests[0].sent

    def ms(t: float | None) -> float | None:
        return None if t is None else round((t - zero) * 1000, 1)

    with path.open("w", encoding="utf-8") as out:
        for r in requests:
            out.write(json.dumps({"id": r.msg_id, "sent_ms": ms(r.sent), "superseded_ms": ms(r.superseded),
                                  "cancelled": r.cancelled, "answered_ms": ms(r.answered), "outcome": r.outcome,
                                  "single_line": r.single_line, "text": r.text}, ensure_ascii=False) + "\n")


async def settle(requests: list[Request], timeout: float) -> None:
    pending = [r.future for r in requests if r.answered is None]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


class Server:
    """The server process seen from outside: memory from /proc, its log drained and kept."""

    def __init__(self, client: LanguageClient) -> None:
        self.process = client._server  # pygls keeps the asyncio subprocess it started
        self.pid = self.process.pid
        self.log: deque[str] = deque(maxlen=40)
        self.log_lines = 0
        # pygls pipes the server's stderr and never reads it: a full pipe would block the server
        self._drain = asyncio.ensure_future(self._read_stderr())

    async def _read_stderr(self) -> None:
        while line := await self.process.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip())
            self.log_lines += 1

    def memory_mib(self, key: str) -> float | None:
        """VmRSS (now) or VmHWM (peak) of the server, MiB."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                kib = next(int(row.split()[1]) for row in status if row.startswith(key + ":"))
            return round(kib / 1024, 1)
        except (OSError, StopIteration):
            return None


async def server_stats(client: LanguageClient) -> dict | None:
    """The server's counters, or None while it does not answer `zhiyin/stats`."""
    try:
        result = await asyncio.wait_for(client.protocol.send_request_async(STATS_METHOD, None), 30)
    except (TimeoutError, JsonRpcMethodNotFound):
        return None
    except JsonRpcException as error:
        log(f"  {STATS_METHOD}: {error}")
        return None
    if hasattr(result, "_asdict"):  # pygls turns an object of no known type into a namedtuple
        result = result._asdict()
    return result if isinstance(result, dict) else None


def stats_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    delta = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], (int, float))}
    requests, prompt = delta.get("requests", 0), delta.get("prompt_tokens", 0)
    reused = delta.get("cache_hits", 0) + delta.get("inflight_reused", 0)
    delta["cache_share"] = round(reused / requests, 3) if requests else None
    delta["prefix_reuse"] = round(delta.get("cached_prompt_tokens", 0) / prompt, 3) if prompt else None
    return delta


def make_client(progress: dict[str, dict]) -> LanguageClient:
    client = LanguageClient("zhiyin-lsp-bench", "1")

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def create_progress(params: types.WorkDoneProgressCreateParams) -> None:
        progress[str(params.token)] = {"created": time.perf_counter()}

    @client.feature(types.PROGRESS)
    def on_progress(params: types.ProgressParams) -> None:
        value = params.value if isinstance(params.value, dict) else {}
        entry = progress.setdefault(str(params.token), {})
        if value.get("kind") == "begin":
            entry["title"] = value.get("title")
        elif value.get("kind") == "end":
            entry["ended"], entry["message"] = time.perf_counter(), value.get("message")

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def show_message(params: types.ShowMessageParams) -> None:
        log(f"  server says: {params.message}")

    return client


# --- the phases -----------------------------------------------------------------------------------


async def replay(editor: Editor, keys: list[str], delays: list[float]) -> list[Request]:
    """Type `keys` on a fixed schedule (sleeping to absolute times, so slow sends do not add up)."""
    first = len(editor.requests)
    start = time.perf_counter()
    due = 0.0
    for i, (key, delay) in enumerate(zip(keys, delays)):
        due += delay
        await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
        editor.type(key)
        editor.request(cancel_previous=True)
        if (i + 1) % 25 == 0:
            log(f"  {i + 1}/{len(keys)} keys")
    await settle(editor.requests[first:], ANSWER_TIMEOUT_S)  # the last one is never cancelled
    return editor.requests[first:]


def replay_figures(requests: list[Request]) -> dict:
    kept = [r for r in requests if not r.cancelled and r.outcome == "items"]
    single = [r.latency_ms for r in kept if r.single_line]
    multi = [r.latency_ms for r in kept if not r.single_line]
    # the cache answers in a few ms; slower answers waited for a model run (new or in flight)
    waited = [ms for ms in single if ms > INSTANT_MS]
    return {
        "requests": len(requests),
        "single_line": {"n": len(single), "p50_ms": percentile(single, 0.5), "p95_ms": percentile(single, 0.95)},
        f"single_line_over_{INSTANT_MS}ms": {"n": len(waited), "p50_ms": percentile(waited, 0.5),
                                            "p95_ms": percentile(waited, 0.95)},
        "multi_line": {"n": len(multi), "p50_ms": percentile(multi, 0.5), "p95_ms": percentile(multi, 0.95)},
        "cancelled_by_client": sum(r.cancelled for r in requests),
        # how the server answered what we cancelled: RequestCancelled is right, an item is wasted work
        "cancelled_answered_as": {o or "unanswered": sum(r.cancelled and r.outcome == o for r in requests)
                                  for o in ("cancelled", "empty", "items", "error", None)},
        "answered_empty": sum(r.outcome == "empty" for r in requests),
        "answered_empty_not_cancelled": sum(r.outcome == "empty" and not r.cancelled for r in requests),
        "errors": sum(r.outcome == "error" for r in requests),
        "unanswered": sum(r.answered is None for r in requests),
    }


async def burst(editor: Editor, keys: list[str], seconds: float, server: Server) -> dict:
    first = len(editor.requests)
    rss_before = server.memory_mib("VmRSS")
    start = time.perf_counter()
    count = int(seconds * BURST_RATE)
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / BURST_RATE - time.perf_counter()))
        editor.type(keys[i % len(keys)])
        editor.request(cancel_previous=False)
    sent_s = time.perf_counter() - start
    rss_end = server.memory_mib("VmRSS")
    requests = editor.requests[first:]
    last = requests[-1]
    await settle([last], ANSWER_TIMEOUT_S)
    await settle(requests, ANSWER_TIMEOUT_S)  # stragglers; by now they should all be in
    await asyncio.sleep(SETTLE_S)
    rss_after = server.memory_mib("VmRSS")
    earlier = requests[:-1]
    stale = [r for r in earlier if r.outcome == "items" and r.answered - r.superseded > STALE_AFTER_S]
    return {
        "requests": len(requests), "rate_per_s": BURST_RATE, "sent_over_s": round(sent_s, 2),
        "last_answered": last.outcome in ("items", "empty"),
        "last_outcome": last.outcome,
        "last_latency_ms": None if last.latency_ms is None else round(last.latency_ms, 1),
        "earlier_answered_with_items": sum(r.outcome == "items" for r in earlier),
        "earlier_answered_empty": sum(r.outcome == "empty" for r in earlier),
        "earlier_answered_cancelled": sum(r.outcome == "cancelled" for r in earlier),
        "earlier_errors": sum(r.outcome == "error" for r in earlier),
        "earlier_unanswered": sum(r.answered is None for r in earlier),
        "stale_answers_after_newer_sent": len(stale),
        "max_answer_after_superseded_s": round(max((r.answered - r.superseded for r in earlier if r.answered),
                                                   default=0.0), 2),
        "rss_mib": {"before": rss_before, "end": rss_end, f"after_{SETTLE_S:g}s": rss_after},
        "rss_after_over_before": round(rss_after / rss_before, 3) if rss_before and rss_after else None,
    }


async def wait_for_progress(progress: dict[str, dict], timeout: float) -> None:
    """Until every progress bar the server began has ended (model load, indexing)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if progress and all("ended" in p for p in progress.values()):
            return
        await asyncio.sleep(0.1)
    log("  progress did not end in time: going on")


async def run(args: argparse.Namespace) -> dict:
    corpus = corpora.chinese_documented_package()
    rng = random.Random(args.seed)
    # picked for the default count at least: a --quick run types the start of the same stretch
    region = pick_region(corpus, max(args.keystrokes, DEFAULT_KEYS), rng)
    delays = key_delays(region.keys, rng)[: args.keystrokes]
    keys = region.keys[: args.keystrokes]
    log(f"retyping {len(keys)} keys of {region.path}:{region.first_line + 1}-"
        f"{region.first_line + len(region.lines)} ({region.function}), {sum(delays):.0f} s of typing")

    work = Path(tempfile.mkdtemp(prefix="zhiyin-lsp-bench-"))
    repo = work / "repo"
    shutil.copytree(corpus.root, repo)
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "XDG_CONFIG_HOME": str(work / "config"),
           "OMP_NUM_THREADS": "2"}
    options = {"embeddings": args.embeddings}

    original = (repo / region.path).read_text(encoding="utf-8").split("\n")
    indent = indentation(region.lines[0])
    opened = "\n".join(original[: region.first_line] + [indent]
                       + original[region.first_line + len(region.lines) :])
    # on disk too: the index must not hand the model the very lines being typed as "context"
    (repo / region.path).write_text(opened, encoding="utf-8")

    load_start = round(os.getloadavg()[0], 2)
    progress: dict[str, dict] = {}
    client = make_client(progress)
    wall = time.perf_counter()
    await client.start_io(*SERVER_COMMAND, env=env, cwd=str(work))
    server = Server(client)
    figures: dict = {}
    editor: Editor | None = None
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True),
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities(),
                    synchronization=types.TextDocumentSyncClientCapabilities(did_save=True))),
            root_uri=repo.as_uri(), locale="en", initialization_options=options))
        client.initialized(types.InitializedParams())
        initialized = time.perf_counter()

        log("cold: model load and indexing …")
        editor = Editor(client, (repo / region.path).as_uri(), opened, region.first_line, len(indent))
        cold = editor.request(cancel_previous=False)
        await settle([cold], ANSWER_TIMEOUT_S)
        await wait_for_progress(progress, 600)
        figures["cold_first_completion_s"] = None if cold.answered is None else round(cold.answered - cold.sent, 2)
        figures["cold"] = {
            "first_outcome": cold.outcome,
            "ready_after_initialize_s": {p.get("title") or token: round(p["ended"] - initialized, 2)
                                         for token, p in progress.items() if "ended" in p},
            "index_message": next((p.get("message") for p in progress.values() if p.get("message")), None),
            "rss_mib": server.memory_mib("VmRSS"),
        }
        log(f"  first completion {figures['cold_first_completion_s']} s; {figures['cold']['index_message']}; "
            f"ready {figures['cold']['ready_after_initialize_s']}")

        stats = [await server_stats(client)]
        log(f"replay: {len(keys)} keys …")
        start = time.perf_counter()
        requests = await replay(editor, keys, delays)
        figures["replay"] = {**replay_figures(requests), "seconds": round(time.perf_counter() - start, 1)}
        if keys == region.keys:  # retyped whole: the file is itself again
            assert editor.text == "\n".join(original), "the replay did not rebuild the file"
        stats.append(await server_stats(client))
        figures["replay"]["server_stats"] = stats_delta(stats[0], stats[1])
        log(f"  single-line {figures['replay']['single_line']}")

        log(f"burst: {BURST_RATE} requests/s for {args.burst_seconds:g} s, never cancelled …")
        # the same lines typed again after the region, from a fresh line: real code, a moving cursor
        burst_keys = ["\n" + indent, *keys_for(region.lines)]
        figures["burst"] = await burst(editor, burst_keys, args.burst_seconds, server)
        stats.append(await server_stats(client))
        burst_stats = figures["burst"]["server_stats"] = stats_delta(stats[1], stats[2])
        # the KV pool's pages are touched as the prefix cache fills (bounded by kv_cache_mib): memory
        # by design, not a leak; what is left after it is the heap that must come back
        rss = figures["burst"]["rss_mib"]
        if burst_stats is not None and "kv_resident_mib" in burst_stats and rss["before"] and rss[f"after_{SETTLE_S:g}s"]:
            figures["burst"]["kv_growth_mib"] = burst_stats["kv_resident_mib"]
            figures["burst"]["rss_after_less_kv_growth_over_before"] = round(
                (rss[f"after_{SETTLE_S:g}s"] - burst_stats["kv_resident_mib"]) / rss["before"], 3)
        log(f"  last request {figures['burst']['last_outcome']} after {figures['burst']['last_latency_ms']} ms, "
            f"{figures['burst']['stale_answers_after_newer_sent']} stale answers")

        figures["server_stats_total"] = stats[-1]
        figures["peak_rss_mib"] = server.memory_mib("VmHWM")
        figures["wall_s"] = round(time.perf_counter() - wall, 1)
        await asyncio.wait_for(client.shutdown_async(None), 30)
        client.exit(None)
    finally:
        try:
            await asyncio.wait_for(client.stop(), 10)
        except TimeoutError:  # an error above left it running
            server.process.kill()
            await server.process.wait()
        shutil.rmtree(work, ignore_errors=True)
        if args.trace:
            write_trace(args.trace, editor.requests if editor else [])
    figures["server_log_lines"] = server.log_lines
    if server.log:
        log("server log (last lines):\n  " + "\n  ".join(server.log))

    single = figures["replay"]["single_line"]
    measured = {"single_line_p50_ms": single["p50_ms"], "single_line_p95_ms": single["p95_ms"]}
    met = {k: None if measured[k] is None else (measured[k] <= v if op == "<=" else measured[k] >= v)
           for k, (op, v) in TARGETS.items()}
    figures["targets_measured"] = measured
    return {
        "bench": "lsp", "machine": machine(),
        "config": {"quick": args.quick, "keystrokes": len(keys), "burst_seconds": args.burst_seconds,
                   "seed": args.seed, "initialization_options": options, "omp_threads": env["OMP_NUM_THREADS"],
                   "corpus": {"name": corpus.name, "source": corpus.source, "files": corpus.num_files,
                              "lines": corpus.num_lines},
                   "file": region.path, "file_lines": len(original), "function": region.function,
                   "deleted_lines": [region.first_line + 1, region.first_line + len(region.lines)],
                   "deleted_keys": len(region.keys),
                   "typing_s": round(sum(delays), 1),
                   "median_key_delay_ms": round(statistics.median(delays) * 1000),
                   # a shared machine: other work running at the same time shows here
                   "load_average_start_end": [load_start, round(os.getloadavg()[0], 2)]},
        "figures": figures, "targets": TARGETS, "met": met,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keystrokes", type=int, default=None,
                        help=f"keys retyped (default {DEFAULT_KEYS}; 40 with --quick)")
    parser.add_argument("--burst-seconds", type=float, default=None, help="burst length (default 30; 5 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="picks the stretch retyped and the delays")
    parser.add_argument("--embeddings", action="store_true", help="index with embeddings (slower to start)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 40 keys, a 5 s burst")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON object here")
    parser.add_argument("--trace", type=Path, default=None, help="write every request here, one JSON line each")
    args = parser.parse_args()
    args.keystrokes = args.keystrokes or (40 if args.quick else DEFAULT_KEYS)
    args.burst_seconds = args.burst_seconds or (5.0 if args.quick else 30.0)

    result = asyncio.run(run(args))
    line = json.dumps(result, ensure_ascii=False)
    if args.out:
        args.out.write_text(line + "\n", encoding="utf-8")
    print(line)


if __name__ == "__main__":
    main()
