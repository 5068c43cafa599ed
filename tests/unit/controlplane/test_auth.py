"""Token file and TokenReview authentication, scopes."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from adaspec.controlplane.auth import Principal, TokenFile, TokenReview, ensure_admin_token


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("# comment\nadmin-token-0123456789 admin alice\n\nread-token-0123456789 read  # bob\n")
    auth = TokenFile.load(f)
    assert auth.authenticate("admin-token-0123456789") == Principal("alice", "admin")
    assert auth.authenticate("read-token-0123456789") == Principal("token-line-4", "read")
    assert auth.authenticate("nope") is None
    assert Principal("x", "admin").allows("read") and not Principal("x", "read").allows("admin")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("tok-0123456789abcdef superuser\n", "tokens:1: expected"),
        ("short admin\n", "tokens:1: token shorter than 16"),
        ("# nothing\n", "no tokens"),
    ],
)
def test_bad_token_file_names_the_line_not_the_token(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "tokens"
    f.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        TokenFile.load(f)
    assert "tok-0123456789abcdef" not in str(err.value)


def test_token_review_maps_groups_and_caches() -> None:
    calls: list[str] = []
    answers: dict[str, dict[str, Any]] = {
        "a": {"authenticated": True, "user": {"username": "ops", "groups": ["adaspec:admins"]}},
        "r": {"authenticated": True, "user": {"username": "dash", "groups": ["adaspec:viewers"]}},
        "n": {"authenticated": True, "user": {"username": "nobody", "groups": ["system:authenticated"]}},
        "x": {"authenticated": False},
    }

    def review(token: str) -> dict[str, Any]:
        calls.append(token)
        return answers[token]

    now = [0.0]
    auth = TokenReview(review, ["adaspec:admins"], ["adaspec:viewers"], ttl_s=60, clock=lambda: now[0])
    assert auth.authenticate("a") == Principal("ops", "admin")
    assert auth.authenticate("r") == Principal("dash", "read")
    assert auth.authenticate("n") is None
    assert auth.authenticate("x") is None
    auth.authenticate("a")
    assert calls == ["a", "r", "n", "x"]
    now[0] = 61.0
    auth.authenticate("a")
    assert calls[-1] == "a" and len(calls) == 5


def test_generated_admin_token_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "admin-token"
    assert ensure_admin_token(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    token = next(line.split()[0] for line in first.splitlines() if not line.startswith("#"))
    assert len(token) >= 43  # token_urlsafe(32): 32 random bytes
    assert TokenFile.load(path).authenticate(token) == Principal("generated-admin", "admin")
    assert ensure_admin_token(path) is False  # a restart reuses the same file
    assert path.read_text() == first
    other = tmp_path / "other" / "admin-token"
    ensure_admin_token(other)
    assert other.read_text() != first  # a fresh token each time one is generated


def test_a_readable_admin_token_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("tok-0123456789abcdef admin\n")
    path.chmod(0o644)
    with pytest.raises(ValueError, match=f"{path}: mode 0644 lets group or others") as err:
        ensure_admin_token(path)
    assert "tok-0123456789abcdef" not in str(err.value)
    assert path.read_text() == "tok-0123456789abcdef admin\n"  # left as it was


def test_an_adaptation_jobs_service_account_may_only_register() -> None:
    job = "system:serviceaccount:ml:adaspec-adaptation"
    answers: dict[str, dict[str, Any]] = {
        "job": {"authenticated": True, "user": {"username": job, "groups": ["system:serviceaccounts"]}},
        "other": {
            "authenticated": True,
            "user": {"username": "system:serviceaccount:ml:default", "groups": ["system:serviceaccounts"]},
        },
        "lookalike": {"authenticated": True, "user": {"username": "adaspec-adaptation", "groups": []}},
    }
    auth = TokenReview(
        answers.__getitem__, ["adaspec:admins"], [], register_service_accounts=["adaspec-adaptation"]
    )
    principal = auth.authenticate("job")
    assert principal == Principal(job, "register")
    assert principal.allows("register") and not principal.allows("read") and not principal.allows("admin")
    assert auth.authenticate("other") is None and auth.authenticate("lookalike") is None
    assert Principal("ops", "admin").allows("register") and not Principal("dash", "read").allows("register")
