"""Where models and revisions live: the one storage seam of the runtime (local paths and file:// now)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

SCHEMES = ("file",)  # plus plain paths; object stores come behind this same function


class LocationError(ValueError):
    """A location whose scheme is not supported, or that does not exist."""


def resolve(location: str, what: str) -> Path:
    """Return the local directory for `location` (a path or a file:// URI); LocationError naming `what`."""
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
            raise LocationError(f"{what}: file URI {location!r} names host {parsed.netloc!r}; only local")
        path = Path(unquote(parsed.path))
    else:
        path = Path(location)
    if not path.is_dir():
        raise LocationError(f"{what}: directory {str(path)!r} does not exist")
    return path
