"""One module per CLI verb: parse nothing, call the app core, print."""
