"""Pure parts of the dev cluster: cache layout, staging replaces, fake GPU nodes, kubeconfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaspec.devcluster import build, cluster


def test_cache_root_honours_adaspec_cache() -> None:
    assert build.cache_root({"ADASPEC_CACHE": "/x/y"}) == Path("/x/y")
    assert build.cache_root({}) == Path.home() / ".cache" / "adaspec"


def test_binaries_are_keyed_by_component_and_version(tmp_path: Path) -> None:
    paths = build.binary_paths(tmp_path)
    assert set(paths) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "kwok",
    }
    assert paths["kubectl"] == tmp_path / "k8s" / build.KUBERNETES_VERSION / "bin" / "kubectl"
    assert paths["etcd"] == tmp_path / "etcd" / build.ETCD_VERSION / "bin" / "etcd"
    assert not any(build.is_built(c, tmp_path) for c in build.COMPONENTS)


def test_staging_modules_are_replaced_by_their_published_versions() -> None:
    go_mod = """
replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/kube-aggregator => ./staging/src/k8s.io/kube-aggregator
)
require github.com/x/y v1.0.0
"""
    assert build.staging_replaces(go_mod, "v1.36.3") == [
        "replace k8s.io/api => k8s.io/api v0.36.3",
        "replace k8s.io/kube-aggregator => k8s.io/kube-aggregator v0.36.3",
    ]
    with pytest.raises(ValueError, match="KUBERNETES_VERSION"):
        build.staging_replaces(go_mod, "1.36")


def test_gpu_node_is_managed_by_kwok_and_has_gpu_capacity() -> None:
    node = cluster.gpu_node("n0")
    meta, status = node["metadata"], node["status"]
    assert isinstance(meta, dict) and isinstance(status, dict)
    assert meta["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert status["capacity"]["nvidia.com/gpu"] == str(cluster.GPU_PER_NODE)
    assert status["allocatable"] == status["capacity"]


def test_kubeconfig_points_at_the_server_with_the_admin_certificate(tmp_path: Path) -> None:
    path = cluster.write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:1234", tmp_path / "pki")
    config = json.loads(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1234"
    assert config["users"][0]["user"]["client-certificate"] == str(tmp_path / "pki" / "admin.crt")


def test_stop_without_a_cluster_is_a_no_op(tmp_path: Path) -> None:
    cluster.stop(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_promtool_is_a_tool_built_beside_the_cluster(tmp_path: Path) -> None:
    assert build.PROMTOOL in build.TOOLS and build.PROMTOOL not in build.COMPONENTS
    assert build.PROMTOOL.binaries() == ("promtool",)
    assert build.bin_dir(build.PROMTOOL, tmp_path) == tmp_path / "promtool" / build.PROMETHEUS_VERSION / "bin"
    flags = build._ldflags(build.PROMTOOL)
    assert "-X github.com/prometheus/common/version.Version=3.16.0" in flags  # v0.316.0 is Prometheus 3.16.0
    bad = build.Component("promtool", "github.com/prometheus/prometheus", "v3.16.0", ("x/cmd/promtool",))
    with pytest.raises(ValueError, match="PROMETHEUS_VERSION"):
        build._ldflags(bad)


def test_promtool_is_built_only_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def fake_go_build(component: build.Component, root: Path, jobs: int) -> None:
        made.append(component.name)
        build.bin_dir(component, root).mkdir(parents=True)
        (build.bin_dir(component, root) / "promtool").write_text("#!/bin/true\n")

    monkeypatch.setattr(build, "go_build", fake_go_build)
    assert build.promtool(tmp_path) == tmp_path / "promtool" / build.PROMETHEUS_VERSION / "bin" / "promtool"
    assert build.promtool(tmp_path).is_file()
    assert made == ["promtool"]
