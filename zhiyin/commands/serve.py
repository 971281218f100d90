"""`zhiyin serve`: the chat server for the repository around the current folder.

The page's address (with a fresh token) is printed at once; the model loads and the repository is
indexed in the background, with progress bars here and on the page.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys

from rich.console import Console

from engine.errors import N_, EngineError
from zhiyin.i18n import _
from zhiyin.runtime import is_loopback, repository_root

DEFAULT_PORT = 8731


class PortInUseError(EngineError):
    message = N_("Port {port} on {host} is in use (another `zhiyin serve`?). Choose another with --port, "
                 "or --port 0 for any free one.")


class CannotBindError(EngineError):
    message = N_("Cannot listen on {host}:{port}: {detail}")


def add_parser(verbs, bounded) -> None:
    serve = verbs.add_parser(
        "serve", help=_("Chat with the repository in your browser."),
        description=_("Start the chat server for the repository: it prints the page's address with a one-time "
                      "token, loads the model and indexes the repository in the background."))
    serve.add_argument("path", nargs="?", default=None,
                       help=_("the repository (default: the git work tree around the current folder)"))
    serve.add_argument("--host", default="127.0.0.1",
                       help=_("address to listen on (default: %(default)s, this machine only)"))
    serve.add_argument("--port", type=bounded(int, 0, 65535), default=DEFAULT_PORT,
                       help=_("port to listen on; 0 picks a free one (default: %(default)s)"))
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help=_("also accept pages from this origin (e.g. an editor's webview); may be given several times"))
    serve.add_argument("--no-embeddings", action="store_true",
                       help=_("index without vectors: faster, but search finds only words and names"))
    serve.add_argument("--model", "-m", default=None,
                       help=_("model name from `zhiyin model list`, or a GGUF file or Hugging Face folder"))


def run_serve(args: argparse.Namespace) -> int:
    from zhiyin.backends import Backends
    from zhiyin.chat_server import ChatServer
    from zhiyin.conversations import ConversationStore
    from zhiyin.progress import ProgressBoard

    console = Console(stderr=True)
    root = repository_root(args.path)
    board = ProgressBoard(terminal=sys.stderr.isatty())
    backends = Backends(root, embeddings=not args.no_embeddings, progress=board, model=args.model,
                        show_error=lambda text: console.print(f"[red]{text}[/red]", highlight=False))
    conversations = ConversationStore()
    if conversations.moved_aside is not None:
        console.print(_("The conversation file was damaged; it was kept as {path} and a new one started.")
                      .format(path=conversations.moved_aside))
    server = ChatServer(backends, conversations, host=args.host, port=args.port,
                        allowed_origins=tuple(args.allow_origin), progress=board.snapshot)
    if not is_loopback(args.host):
        console.print(_("Warning: listening on {host}: other machines can reach this server (the token still "
                        "guards the chat).").format(host=args.host), style="yellow")

    async def main() -> None:
        ready = asyncio.get_running_loop().create_future()
        serving = asyncio.create_task(server.run(ready))
        done, _pending = await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if serving in done:
            serving.result()  # raises why it could not start
        print(_("Zhiyin chat for {root}: open {url}").format(root=root, url=ready.result()), flush=True)
        backends.start()
        await serving

    # Ctrl-C stops the server even where SIGINT came in ignored (a script's background job: the shell
    # ignores it for them), and so does SIGTERM (`kill`, service managers): the same clean way out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        asyncio.run(main())
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(host=args.host, port=args.port) from e
        raise CannotBindError(host=args.host, port=args.port, detail=e.strerror or str(e)) from e
    finally:
        conversations.close()
    return 0
