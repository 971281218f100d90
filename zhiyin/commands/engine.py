"""`zhiyin engine serve`: the local engine as an OpenAI-compatible server for other tools and
machines (vLLM's and llama.cpp's API: /v1/completions, /v1/chat/completions, /v1/models)."""

from __future__ import annotations

import argparse
import asyncio
import os

from engine.errors import N_, EngineError
from zhiyin.i18n import _


class MissingApiKeyError(EngineError):
    message = N_("Listening on {host} needs an API key: set one in an environment variable and name it with "
                 "--api-key-env (e.g. export ZHIYIN_API_KEY=…; --api-key-env ZHIYIN_API_KEY).")


class CannotListenError(EngineError):
    message = N_("Cannot listen on {host}:{port} (in use, or not an address of this machine). Choose another "
                 "with --port, or --port 0 for any free one.")


class EmptyApiKeyError(EngineError):
    message = N_("The environment variable {name} (from --api-key-env) is not set or empty.")


def add_parser(verbs, bounded, add_model_arguments) -> None:
    engine = verbs.add_parser("engine", help=_("Serve the local model to other tools (OpenAI-compatible API)."))
    engine_verbs = engine.add_subparsers(dest="engine_verb", metavar=_("COMMAND"), required=True)
    serve = engine_verbs.add_parser(
        "serve", help=_("Serve the model over an OpenAI-compatible HTTP API."),
        description=_("Serve the local model at /v1/completions, /v1/chat/completions and /v1/models, with "
                      "streaming, /health and /metrics. Concurrent requests are batched."))
    serve.add_argument("--host", default="127.0.0.1",
                       help=_("address to listen on (default: %(default)s, this machine only)"))
    serve.add_argument("--port", type=bounded(int, 0, 65535), default=8000,
                       help=_("port to listen on; 0 picks a free one (default: %(default)s)"))
    serve.add_argument("--api-key-env", default=None, metavar="VAR",
                       help=_("require `Authorization: Bearer KEY`, KEY read from this environment variable "
                              "(needed beyond loopback)"))
    serve.add_argument("--max-batch", type=bounded(int, 1, 256), default=16,
                       help=_("requests decoded together (default: %(default)s)"))
    serve.add_argument("--max-queue", type=bounded(int, 1), default=64,
                       help=_("requests allowed to wait; more get 429 (default: %(default)s)"))
    serve.add_argument("--served-model-name", default=None, metavar="NAME",
                       help=_("the model id clients send (default: the model file's)"))
    add_model_arguments(serve)
    stats = engine_verbs.add_parser(
        "stats", help=_("Show the KV cache: what the disk keeps for the next process, and a running engine's tiers."),
        description=_("Show what the disk tier of the KV cache holds, per model, then the live figures of the "
                      "engine serving at --url: bytes per tier (device, host, disk) and, with a bounded device "
                      "tier, its promotions, demotions, locality and disk reads."))
    stats.add_argument("--url", default="http://127.0.0.1:8000",
                       help=_("a running `zhiyin engine serve` (default: %(default)s)"))


def run_stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from engine.kv_disk import describe
    from zhiyin.config import load_config
    from zhiyin.runtime import kv_disk_dir

    folder, budget = kv_disk_dir(), load_config(None).engine.kv_disk_mib
    print(_("KV cache on disk: {folder} (budget {budget} MiB per model{off})").format(
        folder=folder, budget=budget, off=_("; off") if budget <= 0 else ""))
    stored = describe(folder) if folder.is_dir() else []
    console = Console(soft_wrap=True)
    if not stored:
        print(_("Nothing stored yet: prompts of 256 tokens or more are saved as they are served."))
    else:
        table = Table(box=None)
        for column in (_("model"), _("dtype"), _("chunks"), _("tokens"), _("MiB")):
            table.add_column(column)
        for entry in stored:
            table.add_row(entry.model_id, entry.dtype, str(entry.chunks), f"{entry.chunks * 256:,}",
                          f"{entry.bytes / 2**20:.1f}")
        console.print(table)
    live = live_metrics(args.url)
    if live is None:
        print(_("No engine is serving at {url}: its live figures appear while `zhiyin engine serve` runs.").format(
            url=args.url))
        return 0
    print(_("Engine at {url}:").format(url=args.url))
    table = Table(box=None)
    table.add_column(_("tier"))
    table.add_column(_("MiB"), justify="right")
    table.add_column(_("budget MiB"), justify="right")
    budget = live.get("zhiyin_kv_device_budget_bytes")
    budgets = {"device": budget, "host": live.get("zhiyin_kv_host_budget_bytes")}
    for tier, name in (("device", _("device (full precision)")), ("host", _("host (FP8)")), ("disk", _("disk"))):
        size = live.get(f'zhiyin_kv_bytes{{tier="{tier}"}}', 0.0)
        limit = budgets.get(tier)
        table.add_row(name, f"{size / 2**20:.1f}", f"{limit / 2**20:.1f}" if limit is not None else "-")
    console.print(table)
    if budget is not None:
        counters = [(_("promotions (blocks read back from disk)"), "zhiyin_kv_promotions_total", "{:.0f}"),
                    (_("demotions (blocks left on disk only)"), "zhiyin_kv_demotions_total", "{:.0f}"),
                    (_("locality (selected blocks already on the device)"), "zhiyin_kv_locality", "{:.1%}"),
                    (_("fetch time per block (ms)"), "zhiyin_kv_fetch_ms_per_promotion", "{:.3f}"),
                    (_("disk bytes read per token"), "zhiyin_kv_disk_bytes_per_token", "{:,.0f}")]
        for label, metric, shape in counters:
            print(f"  {label}: {shape.format(live.get(metric, 0.0))}")
    if budgets["host"] is not None:
        counters = [(_("FP8 blocks read back from the host tier's file"), "zhiyin_kv_host_promotions_total"),
                    (_("FP8 blocks handed back to the OS"), "zhiyin_kv_host_demotions_total")]
        for label, metric in counters:
            print(f"  {label}: {live.get(metric, 0.0):.0f}")
    return 0


def live_metrics(url: str) -> dict[str, float] | None:
    """The /metrics of the engine serving at `url` (Prometheus text), or None when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/").removesuffix("/v1") + "/metrics", timeout=3) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    metrics = {}
    for line in text.splitlines():
        name, _space, value = line.rpartition(" ")
        if name and not line.startswith("#"):
            try:
                metrics[name] = float(value)
            except ValueError:
                continue
    return metrics


def run_engine(args: argparse.Namespace) -> int:
    if args.engine_verb == "stats":
        return run_stats(args)
    import uvicorn

    from engine.openai_server import create_app
    from zhiyin.config import load_config
    from zhiyin.runtime import is_loopback, open_engine

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env) or None
        if api_key is None:
            raise EmptyApiKeyError(name=args.api_key_env)
    elif not is_loopback(args.host):
        raise MissingApiKeyError(host=args.host)
    config = load_config(None)
    config.engine.max_batch = args.max_batch
    engine = open_engine(config, args.model, args.dtype, args.threads, args.adapter)
    app = create_app(engine, api_key=api_key, max_queue=args.max_queue, model_name=args.served_model_name)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           timeout_graceful_shutdown=2))

    async def announce() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.05)
        if server.started:  # bound: the port is known, also for --port 0
            port = server.servers[0].sockets[0].getsockname()[1]
            print(_("Serving {model} at http://{host}:{port}/v1").format(
                model=args.served_model_name or engine.model_id, host=args.host, port=port), flush=True)

    async def main() -> None:
        await asyncio.gather(server.serve(), announce())

    asyncio.run(main())
    if not server.started:
        raise CannotListenError(host=args.host, port=args.port)
    return 0
