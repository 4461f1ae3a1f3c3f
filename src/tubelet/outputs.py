"""Output directories checked before the work starts, so a run never computes for an hour and then fails to save."""

from __future__ import annotations

import os
from pathlib import Path

from tubelet.errors import ConfigError


def writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Check that `path` is, or can be created as, a directory files can be written in; nothing is created (a
    command that fails later on bad input leaves no empty output behind).

    Args:
        path: the output directory.
        flag: the flag or argument that named it, for the message (``--out``).

    Raises:
        ConfigError: naming the flag and the path when the directory cannot be created or written.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:  # the nearest part of the path that exists
        existing = existing.parent
    if not existing.is_dir():
        what = (
            "exists and is not a directory"
            if existing == path
            else f"cannot create the directory ({existing} is a file)"
        )
        raise ConfigError(f"{flag} {path}: {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "the directory" if existing == path else f"its parent {existing}"
        raise ConfigError(f"{flag} {path}: {where} is not writable")
    return path
