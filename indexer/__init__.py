"""indexer: see ../shared/DESIGN.md."""
