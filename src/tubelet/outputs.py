"""Output directories checked before the work starts, so a run never computes for an hour and then fails to save."""

from __future__ import annotations

import os
from pathlib import Path

from tubelet.errors import ConfigError


def writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Create `path` (and its parents) if missing and check that files can be written in it.

    Args:
        path: the output directory.
        flag: the flag or argument that named it, for the message (``--out``).

    Raises:
        ConfigError: naming the flag and the path when the directory cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{flag} {path}: exists and is not a directory") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the directory ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: the directory is not writable")
    return path
