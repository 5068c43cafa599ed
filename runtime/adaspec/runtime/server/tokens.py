"""Admin bearer tokens of `serve` (only sha256 digests are kept; never logged); torch-free."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from adaspec.privatefile import create_private_file

STATIC = "static"  # the revision built from the static draft itself (no artifact)


class AdminTokens:
    """Bearer tokens of the admin API (only their sha256 digests are kept; never logged)."""

    def __init__(self, digests: set[str], source: Path) -> None:
        if not digests:
            raise ValueError(f"admin token file {str(source)!r} holds no token")
        self._digests = digests
        self.source = source

    @classmethod
    def from_file(cls, path: Path) -> AdminTokens:
        """Read one token per line (first field; blank lines and # comments ignored)."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"admin token file {str(path)!r}: {exc.strerror}") from None
        tokens = {ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}
        return cls({_digest(t) for t in tokens}, path)

    @classmethod
    def generated(cls, state_dir: Path) -> AdminTokens:
        """Reuse or create `<state_dir>/admin-token` (mode 0600) holding one random token."""
        path = state_dir / "admin-token"
        create_private_file(path, secrets.token_urlsafe(32) + "\n")
        return cls.from_file(path)

    def check(self, header: str | None) -> bool:
        """Whether an `Authorization` header carries one of the tokens."""
        if not header or not header.startswith("Bearer "):
            return False
        digest = _digest(header[len("Bearer ") :].strip())
        return any(hmac.compare_digest(digest, d) for d in self._digests)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
