"""Bearer-token authentication with read-only and admin scopes: a token file or Kubernetes TokenReview."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

Scope = Literal["read", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "admin")
log = logging.getLogger("adaspec.controlplane.auth")


@dataclass(frozen=True)
class Principal:
    """Who called, and what they may do."""

    subject: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        """Return whether this principal's scope covers `needed` (admin covers read)."""
        return self.scope == "admin" or needed == "read"


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Principal | None: ...


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenFile:
    """Tokens from a file, one per line: `<token> <read|admin> [subject]`; `#` starts a comment.

    Only SHA-256 digests are kept in memory; comparison is constant-time.
    """

    def __init__(self, entries: Sequence[tuple[bytes, Principal]]) -> None:
        self._entries = list(entries)

    @classmethod
    def load(cls, path: Path) -> TokenFile:
        """Return the tokens in `path`; raise ValueError naming the line (never the token)."""
        entries = []
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) not in (2, 3) or parts[1] not in SCOPES:
                raise ValueError(f"{path}:{number}: expected '<token> <read|admin> [subject]'")
            if len(parts[0]) < 16:
                raise ValueError(f"{path}:{number}: token shorter than 16 characters")
            subject = parts[2] if len(parts) == 3 else f"token-line-{number}"
            scope: Scope = "admin" if parts[1] == "admin" else "read"
            entries.append((_digest(parts[0]), Principal(subject, scope)))
        if not entries:
            raise ValueError(f"{path}: no tokens")
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        digest = _digest(token)
        found = None
        for known, principal in self._entries:
            if hmac.compare_digest(known, digest):
                found = principal
        return found


class TokenReview:
    """Kubernetes TokenReview: the API server says who the token belongs to; groups map to scopes.

    `review(token)` returns the TokenReview status (dict with authenticated, user{username, groups}).
    Results are cached for `ttl_s` under the token's digest.
    """

    def __init__(
        self,
        review: Callable[[str], dict[str, Any]],
        admin_groups: Sequence[str],
        read_groups: Sequence[str],
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._review = review
        self._admin, self._read = set(admin_groups), set(read_groups)
        self._ttl, self._clock = ttl_s, clock
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    def authenticate(self, token: str) -> Principal | None:
        key, now = _digest(token), self._clock()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        status = self._review(token)
        principal = None
        if status.get("authenticated"):
            user = status.get("user") or {}
            groups = set(user.get("groups") or ())
            name = str(user.get("username") or "unknown")
            if groups & self._admin:
                principal = Principal(name, "admin")
            elif groups & self._read:
                principal = Principal(name, "read")
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[key] = (now, principal)
        return principal


def kubernetes_review(api_client: Any | None = None) -> Callable[[str], dict[str, Any]]:
    """Return a TokenReview call through `api_client`, else the in-cluster (or kubeconfig) credentials."""
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    api = client.AuthenticationV1Api(api_client)

    def review(token: str) -> dict[str, Any]:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        status = api.create_token_review(body).status
        if status is None:
            return {"authenticated": False}
        user = status.user
        return {
            "authenticated": bool(status.authenticated),
            "user": {"username": user.username, "groups": list(user.groups or [])} if user else {},
        }

    return review


class Open:
    """No authentication (auth.mode none): every caller is admin. For a laptop, never for a fleet."""

    def authenticate(self, token: str) -> Principal | None:
        return Principal("anonymous", "admin")
