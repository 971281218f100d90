"""Errors of the indexer a user reads (gettext msgids, translated by the app core)."""

from engine.errors import N_, EngineError


class NotADirectoryToIndexError(EngineError):
    message = N_("{path} is not a folder. Run `zhiyin index` inside a repository, or give its path.")


class IndexLockedError(EngineError):
    message = N_(
        "The index {path} is busy: another Zhiyin process is writing to it. Try again when it finishes."
    )


class IndexUnwritableError(EngineError):
    message = N_("Cannot write the index {path}: {detail}. Check free disk space and permissions.")
