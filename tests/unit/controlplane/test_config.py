"""Settings: defaults, per-speculator policies, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.controlplane.config import Settings, default_state_dir, load_settings


def test_defaults_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "cp.yaml"
    f.write_text(
        "speculators:\n"
        "  - name: chat\n    endpoints: [{url: 'http://pod:9090/metrics'}]\n"
        "    policies: {canary: {iterations: 5}}\n"
        "  - name: code\n    source: vllm\n    endpoints: [{url: 'http://vllm:8000/metrics', role: canary}]\n"
    )
    st = load_settings(f, env={"ADASPEC_CP_DB_URL": "postgresql+psycopg://cp@db/cp"})
    assert st.db_url == "postgresql+psycopg://cp@db/cp"
    assert st.policies_for("chat").canary.iterations == 5
    assert st.policies_for("code").canary.iterations == 3
    assert st.speculator("code") is not None and st.speculator("code").endpoints[0].role == "canary"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "speculators: [{name: chat}]\n",
            "speculators.0: Value error, speculator chat: source runtime needs endpoints",
        ),
        ("speculators: [{name: Chat!, endpoints: [{url: 'http://x'}]}]\n", "speculators.0.name"),
        ("policies: {drift: {threshold: -1}}\n", "policies.drift.threshold"),
        ("scrape_intervall_s: 3\n", "scrape_intervall_s: Extra inputs are not permitted"),
        ("- a\n- b\n", "expected a mapping"),
        (
            "speculators: [{name: a, endpoints: [{url: 'http://x'}]}, {name: a, endpoints: [{url: 'http://y'}]}]\n",
            "duplicate name 'a'",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "cp.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_settings(f, env={})


def test_empty_settings_are_valid() -> None:
    assert Settings().db_url.startswith("sqlite:///")


def test_the_settings_shipped_in_manifests_load(tmp_path: Path) -> None:
    import yaml

    manifest = Path(__file__).resolve().parents[3] / "manifests" / "controlplane.yaml"
    (config_map,) = [d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "ConfigMap"]
    f = tmp_path / "settings.yaml"
    f.write_text(config_map["data"]["settings.yaml"])
    st = load_settings(f, env={})
    assert (st.actuator, st.auth.mode) == ("kubernetes", "tokenreview")
    assert st.db_url.startswith("sqlite:////var/lib/adaspec/")  # the Deployment's data volume


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("sqlite:////data/cp/cp.db", {}, "/data/cp"),
        ("sqlite:///cp.db", {}, "."),
        ("sqlite://", {"XDG_STATE_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/adaspec/control-plane"),
        ("postgresql+psycopg://cp@db/cp", {"XDG_STATE_HOME": "/xdg"}, "/xdg/adaspec/control-plane"),
        ("postgresql+psycopg://cp@db/cp", {"HOME": "/home/u"}, "/home/u/.local/state/adaspec/control-plane"),
        (
            "postgresql+psycopg://cp@db/cp",
            {"XDG_STATE_HOME": "rel", "HOME": "/h"},
            "/h/.local/state/adaspec/control-plane",
        ),
    ],
)
def test_default_state_dir(url: str, env: dict[str, str], expected: str) -> None:
    assert default_state_dir(url, env) == Path(expected)


def test_load_urls_need_a_token_file(tmp_path: Path) -> None:
    f = tmp_path / "cp.yaml"
    f.write_text("local: {load_urls: {canary: 'http://127.0.0.1:8001/admin/v1/revisions/load'}}\n")
    with pytest.raises(
        ValueError, match="local.load_token_file: required when local.load_url or local.load_urls"
    ):
        load_settings(f, env={})
    f.write_text(
        "local: {load_url: 'http://x/load', load_urls: {canary: 'http://y/load'}, load_token_file: t}\n"
    )
    local = load_settings(f, env={}).local
    assert (local.load_url_for("stable"), local.load_url_for("canary")) == ("http://x/load", "http://y/load")
    f.write_text("local: {load_urls: {canery: 'http://y/load'}, load_token_file: t}\n")
    with pytest.raises(ValueError, match="local.load_urls.canery"):
        load_settings(f, env={})
