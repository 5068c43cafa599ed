"""Shared fixtures: `kube_cluster`, a real Kubernetes API server (started only when a test asks for it), and
the fixture models and prompts of the runtime, `up` and Kubernetes loop tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class KubeCluster:
    """A cluster to test against: its kubeconfig, and kubectl bound to it."""

    kubeconfig: Path
    kubectl_path: str
    started_here: bool  # False when KUBECONFIG pointed at an existing cluster (kind, k3d, ...)

    def env(self) -> dict[str, str]:
        """Return os.environ with KUBECONFIG set to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise with its stderr when `check` and it fails."""
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def service_account_kubeconfig(self, account: str, namespace: str = "adaspec-system") -> Path:
        """Write a kubeconfig that authenticates as a ServiceAccount (a TokenRequest token); return it.

        Code under test runs with it, so the RBAC in manifests/ is exercised by use, not only by
        `kubectl auth can-i`.
        """
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
        view = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        cluster_entry = view["clusters"][0]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster_entry],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": account, "context": {"cluster": cluster_entry["name"], "user": account}}],
            "current-context": account,
        }
        path = self.kubeconfig.parent / f"{namespace}-{account}.kubeconfig"
        path.write_text(json.dumps(config))
        return path


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """Yield a Kubernetes cluster: the one KUBECONFIG names, else a local one started from the cache.

    The local one (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok with fake GPU nodes)
    is built by `adaspec.devcluster.build` if missing and stopped, with all its processes, at the
    end of the session.
    """
    from adaspec.devcluster import build, cluster

    existing = os.environ.get("KUBECONFIG")
    if existing:
        cached = build.binary_paths()["kubectl"]
        kubectl = shutil.which("kubectl") or str(cached)
        yield KubeCluster(Path(existing), kubectl, started_here=False)
        return
    state = tmp_path_factory.mktemp("kube-cluster")
    running = cluster.start(state)
    try:
        yield KubeCluster(running.kubeconfig, str(running.kubectl), started_here=True)
    finally:
        cluster.stop(state, procs=running.procs, keep_logs=True)


# Real fixture models (trained here, cached by recipe) and prompts cut from held-out source files, for the
# runtime's, `adaspec up`'s and the Kubernetes loop's tests (imported lazily: the control-plane tests need
# no torch).
@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    from adaspec.runtime.fixtures import build_fixtures

    return build_fixtures()


@pytest.fixture(scope="session")
def feature_draft(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feature draft for the fixture target, by train-draft's feature recipe cut short (60 steps of
    128-token windows on the Python training split): a revision directory, checksummed."""
    from adaspec.runtime.train_feature import FeatureRecipe, ensure_feature_draft
    from adaspec.runtime.workloads import default_corpora

    python = next(s for s in default_corpora() if s.lang == "python")
    recipe = FeatureRecipe(seq_len=128, steps=60, eval_sequences=4)
    out = tmp_path_factory.mktemp("feature") / "draft"
    return ensure_feature_draft(fixture_dir / "target", python, out, recipe, show_progress=False)[0]


@pytest.fixture(scope="session")
def ranked_draft(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture draft with the token counts train-draft writes beside a draft (vocab.safetensors), here
    of 200 k tokens of the Python training split: its static and adaptive drafts draft over the 256 most
    counted of the fixture's 1024 ids (`proposers.vocab.reduced_size`)."""
    import itertools

    import torch

    from adaspec.runtime.draft_data import token_stream, training_files
    from adaspec.runtime.models import load_tokenizer
    from adaspec.runtime.proposers.vocab import save_counts
    from adaspec.runtime.workloads import default_corpora, list_corpus

    out = tmp_path_factory.mktemp("ranked") / "draft"
    shutil.copytree(fixture_dir / "draft", out)
    tok = load_tokenizer(fixture_dir / "target")
    corpus = list_corpus(next(s for s in default_corpora() if s.lang == "python"))
    stream = token_stream(corpus, training_files(corpus), lambda t: tok(t).input_ids, 0, 0, [])
    tokens = torch.tensor(list(itertools.islice(stream, 200_000)), dtype=torch.long)
    save_counts(out, torch.bincount(tokens, minlength=len(tok)).double())
    return out


@pytest.fixture(scope="session")
def prompts(fixture_dir: Path) -> list[Any]:
    """52 prompts (`adaspec.runtime.workloads.Prompt`): 26 Python (the draft's language) and 26 Go (unseen
    by the draft), 48 tokens each."""
    from adaspec.runtime.microbench import cut_prompts
    from adaspec.runtime.models import load_tokenizer

    tok = load_tokenizer(fixture_dir / "target")
    out = [p for lang in ("python", "go") for p in cut_prompts(tok, lang, 26, length=48)]
    assert len(out) == 52
    return out
