"""`python -m lsp_server`: the language server over stdio (what `zhiyin lsp` runs by default)."""

from lsp_server.server import serve

serve()
