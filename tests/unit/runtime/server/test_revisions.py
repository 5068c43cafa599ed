"""Admin bearer tokens: a generated file is private and reused, a readable one is refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from adaspec.runtime.server.tokens import AdminTokens


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _token(path: Path) -> str:
    return path.read_text().strip()


def test_generated_token_file_is_mode_0600(tmp_path: Path) -> None:
    state = tmp_path / "state" / "serve-8000"
    tokens = AdminTokens.generated(state)
    path = state / "admin-token"
    assert tokens.source == path
    assert _mode(path) == 0o600
    assert _mode(state) == 0o700
    token = _token(path)
    assert len(token) >= 32
    assert tokens.check(f"Bearer {token}")


def test_generated_token_is_reused_on_the_second_call(tmp_path: Path) -> None:
    first = AdminTokens.generated(tmp_path)
    token = _token(tmp_path / "admin-token")
    second = AdminTokens.generated(tmp_path)
    assert _token(tmp_path / "admin-token") == token
    assert first.check(f"Bearer {token}") and second.check(f"Bearer {token}")


def test_two_state_dirs_get_different_tokens(tmp_path: Path) -> None:
    AdminTokens.generated(tmp_path / "a")
    AdminTokens.generated(tmp_path / "b")
    assert _token(tmp_path / "a" / "admin-token") != _token(tmp_path / "b" / "admin-token")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "admin-token"
    path.write_text("secret\n")
    path.chmod(mode)
    with pytest.raises(ValueError) as info:
        AdminTokens.generated(tmp_path)
    msg = str(info.value)
    assert f"mode {mode:04o}" in msg and "chmod 600" in msg
    assert "secret" not in msg  # never the token itself


def test_a_private_existing_token_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("mine\n")
    path.chmod(0o600)
    tokens = AdminTokens.generated(tmp_path)
    assert tokens.check("Bearer mine")
    assert _token(path) == "mine"  # not overwritten


@pytest.fixture
def tokens(tmp_path: Path) -> AdminTokens:
    path = tmp_path / "tokens"
    path.write_text("# the operator's token\n\nalpha\n   \n  # indented comment\nbeta  control-plane\n")
    return AdminTokens.from_file(path)


def test_check_right_token(tokens: AdminTokens) -> None:
    assert tokens.check("Bearer alpha")
    assert tokens.check("Bearer beta")  # the first field of a line; the rest is a label
    assert tokens.check("Bearer alpha  ")  # surrounding whitespace is not part of the token


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong",
        "Bearer alph",
        "Bearer alphabeta",
        "Bearer control-plane",  # a label, not a token
        "Bearer # the operator's token",  # comments are not tokens
        "Bearer #",
        "Bearer ",
        "Bearer",
    ],
)
def test_check_wrong_token(tokens: AdminTokens, header: str) -> None:
    assert not tokens.check(header)


@pytest.mark.parametrize("header", [None, ""])
def test_check_missing_header(tokens: AdminTokens, header: str | None) -> None:
    assert not tokens.check(header)


@pytest.mark.parametrize("header", ["alpha", "Basic alpha", "Token alpha", "Bearer:alpha", " Bearer alpha"])
def test_check_non_bearer_header(tokens: AdminTokens, header: str) -> None:
    assert not tokens.check(header)


def test_a_file_of_only_comments_and_blank_lines_holds_no_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# nothing here\n\n   \n")
    with pytest.raises(ValueError, match="holds no token"):
        AdminTokens.from_file(path)


def test_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"admin token file '.*nope': No such file"):
        AdminTokens.from_file(tmp_path / "nope")


def test_tokens_are_kept_only_as_digests(tokens: AdminTokens) -> None:
    assert "alpha" not in repr(vars(tokens))
