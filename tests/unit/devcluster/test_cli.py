"""`adaspec dev cluster ...` is registered by the developer tools' own module."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.cli.main import COMMAND_MODULES, build_parser


def test_dev_commands_come_from_devtools() -> None:
    assert "adaspec.devcluster.cli" in COMMAND_MODULES


@pytest.mark.parametrize("action", ["up", "build", "down", "env"])
def test_dev_cluster_actions_are_registered(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["dev", "cluster", action, "--help"])
    assert exc.value.code == 0
    assert f"usage: adaspec dev cluster {action}" in capsys.readouterr().out


def test_env_prints_the_kubeconfig_export(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADASPEC_CACHE", str(tmp_path))
    args = build_parser().parse_args(["dev", "cluster", "env", "--name", "t"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == f"export KUBECONFIG={tmp_path / 'clusters' / 't' / 'kubeconfig'}\n"


def test_build_builds_the_cluster_and_the_tools(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from adaspec.devcluster import build

    asked: list[tuple[build.Component, ...]] = []

    def fake_build_all(*, components: tuple[build.Component, ...]) -> dict[str, Path]:
        asked.append(components)
        return {b: Path("/c") / b for c in components for b in c.binaries()}

    monkeypatch.setattr(build, "build_all", fake_build_all)
    args = build_parser().parse_args(["dev", "cluster", "build"])
    assert args.func(args) == 0
    assert asked == [build.COMPONENTS + build.TOOLS]
    assert "promtool /c/promtool\n" in capsys.readouterr().out
