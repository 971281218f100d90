"""engram: see ../shared/DESIGN.md."""
