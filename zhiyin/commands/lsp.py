"""`zhiyin lsp`: the language server for editors, over stdio (default) or TCP."""

import argparse

from zhiyin.i18n import _

LOOPBACK = "127.0.0.1"


def parse_tcp_address(text: str) -> tuple[str, int]:
    """An argparse type: 'HOST:PORT' or 'PORT' (loopback) -> (host, port)."""
    host, _sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(_("not a TCP address (HOST:PORT): {value}").format(value=text)) from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(_("{value} is out of range").format(value=port))
    return host.strip("[]") or LOOPBACK, number


def run_lsp(args: argparse.Namespace) -> int:
    from lsp_server.server import serve  # torch and pygls load only for this verb

    serve(tcp=args.tcp, model=args.model)
    return 0
