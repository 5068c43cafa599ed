"""Files only their owner may read (generated admin tokens): created once with mode 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def create_private_file(path: Path, content: str) -> bool:
    """Write `content` to a new `path` with mode 0600 (O_EXCL: never over an existing file or link);
    return True when created. An existing file is left as it is (False), unless group or others may
    access it: then ValueError names the file and its mode (the content is never in the message)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ValueError(
                f"{path}: mode {mode:04o} lets group or others access the admin token; "
                f"run 'chmod 600 {path}' or remove the file to have a new one generated"
            ) from None
        return False
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return True
