"""A small shop backend: configuration, storage and orders."""
