"""Where models and revisions live: the one storage seam of the runtime (local paths, file:// and storage://
now).

`storage:///<path>` is a location on the speculator's shared storage, whose root in this process is
`$ADASPEC_STORAGE_ROOT` (in a pod, the claim's mount): a revision registered as `storage:///revisions/x/r3`
names the same files in the Job that wrote it and in every runtime pod that loads it, wherever each mounts
the claim. Object stores come behind this same function.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

SCHEMES = ("file", "storage")  # plus plain paths
STORAGE_ROOT_ENV = "ADASPEC_STORAGE_ROOT"


class LocationError(ValueError):
    """A location whose scheme is not supported, or that does not exist."""


def resolve(location: str, what: str, env: Mapping[str, str] | None = None) -> Path:
    """Return the local directory for `location` (a path, a file:// or a storage:// URI); LocationError
    naming `what`."""
    if not location:
        raise LocationError(f"{what}: empty location")
    parsed = urlparse(location)
    if parsed.scheme and len(parsed.scheme) > 1:  # "C:" style drive letters are not schemes
        if parsed.scheme not in SCHEMES:
            raise LocationError(
                f"{what}: scheme {parsed.scheme!r} in {location!r} is not supported "
                f"(supported: a local path, {', '.join(s + '://' for s in SCHEMES)})"
            )
        if parsed.netloc not in ("", "localhost"):
            raise LocationError(f"{what}: URI {location!r} names host {parsed.netloc!r}; only local")
        path = Path(unquote(parsed.path))
        if parsed.scheme == "storage":
            path = _on_storage(PurePosixPath(unquote(parsed.path)), location, what, env)
    else:
        path = Path(location)
    if not path.is_dir():
        raise LocationError(f"{what}: directory {str(path)!r} does not exist")
    return path


def _on_storage(rel: PurePosixPath, location: str, what: str, env: Mapping[str, str] | None) -> Path:
    root = (os.environ if env is None else env).get(STORAGE_ROOT_ENV, "")
    if not root:
        raise LocationError(
            f"{what}: {location!r} is on the shared storage, but {STORAGE_ROOT_ENV} is not set"
        )
    parts = rel.relative_to("/").parts if rel.is_absolute() else rel.parts
    if ".." in parts:
        raise LocationError(f"{what}: {location!r} leaves the shared storage")
    return Path(root).joinpath(*parts)


def storage_uri(relative: str) -> str:
    """Return the storage:// URI of a path relative to the shared storage's root."""
    return "storage:///" + relative.lstrip("/")
