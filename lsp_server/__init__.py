"""lsp_server: see ../shared/DESIGN.md."""
