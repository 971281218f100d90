"""Errors of the project memory a user reads (gettext msgids, translated by the app core)."""

from engine.errors import N_, EngineError


class MemoryNotFoundError(EngineError):
    message = N_("There is no memory #{id}. `zhiyin memory list` shows them.")


class MemoryStoreUnwritableError(EngineError):
    message = N_("Cannot write the project memory {path}: {detail}. Check free disk space and permissions.")


class InvalidMemoryError(EngineError):
    message = N_("The memory is not valid: {detail}.")


class MemoryImportError(EngineError):
    message = N_("Cannot import {path}, line {line}: {detail}.")
