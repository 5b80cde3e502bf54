"""The two errors every data problem raises, so the CLI can print them without a traceback."""

from __future__ import annotations

__all__ = ["DataError", "DataNotFoundError"]


class DataError(ValueError):
    """The data is there but wrong: corrupt archive, checksum mismatch, unreadable image, bad
    layout, unknown name or an impossible split. The message names the problem and the fix."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No copy of the data was found (or a given path does not exist); the message lists where we
    looked and the ways to provide the data."""
