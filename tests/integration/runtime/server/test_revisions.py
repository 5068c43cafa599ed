"""Draft revisions through the admin API, by the control plane's own local actuator: verified before a
swap, swapped between requests, refused with the serving revision untouched."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import httpx
import pytest
import torch

from adaspec.controlplane.actuators import LocalActuator
from adaspec.controlplane.config import LocalActuatorConfig
from adaspec.runtime.artifacts import manifest_sha256, save_revision
from adaspec.runtime.engine import autoregressive_generate
from adaspec.runtime.models import CachedLM, load_causal_lm, tokenizer_fingerprint
from adaspec.runtime.proposers.vocab import read_counts
from adaspec.runtime.workloads import Prompt

from .serving import Serving

MAX_NEW = 20


def _revision(
    fixture_dir: Path, out: Path, revision: str, noise: float = 0.0, counts: torch.Tensor | None = None
) -> Path:
    """The fixture draft (weights perturbed by `noise`) written as a revision directory (with `counts`)."""
    model = load_causal_lm(fixture_dir / "draft", "draft")
    if noise:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    fp = tokenizer_fingerprint(fixture_dir / "target")
    save_revision(
        model,
        out,
        revision=revision,
        parent="static",
        target_model="fixture",
        tokenizer_sha256=fp,
        counts=counts,
    )
    return out


@pytest.fixture(scope="module")
def revisions(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("revisions")
    r1 = _revision(fixture_dir, root / "r1", "r1")
    r2 = _revision(fixture_dir, root / "r2", "r2", noise=0.05)
    tampered = root / "r3"
    shutil.copytree(_revision(fixture_dir, root / "r3-src", "r3"), tampered)
    weights = tampered / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    pickled = root / "r4"
    shutil.copytree(r1, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    manifest = json.loads((pickled / "manifest.json").read_text())
    manifest["revision"] = "r4"
    (pickled / "manifest.json").write_text(json.dumps(manifest))
    return {"r1": r1, "r2": r2, "r3": tampered, "r4": pickled}


def _load(served: Serving, body: dict[str, object]) -> httpx.Response:
    return httpx.post(served.url + "/admin/v1/revisions/load", json=body, headers=served.admin(), timeout=120)


def _serving(served: Serving) -> dict[str, object]:
    listing = httpx.get(served.url + "/admin/v1/revisions", headers=served.admin(), timeout=10).json()
    assert isinstance(listing["serving"], dict)
    return listing["serving"]


def test_refused_loads_name_the_problem_and_keep_serving(served: Serving, revisions: dict[str, Path]) -> None:
    before = _serving(served)["revision"]
    r1 = revisions["r1"]
    cases = [
        ({"revision": "r1", "artifact_uri": r1.as_uri(), "sha256": "0" * 64}, 409, "manifest.json"),
        ({"revision": "r2", "artifact_uri": r1.as_uri()}, 409, "holds revision 'r1'"),
        ({"revision": "r3", "artifact_uri": revisions["r3"].as_uri()}, 409, "model.safetensors"),
        ({"revision": "r4", "artifact_uri": str(revisions["r4"])}, 422, "pickle"),
        ({"revision": "r1", "artifact_uri": "s3://bucket/r1"}, 404, "scheme 's3'"),
        ({"revision": "r1", "artifact_uri": (r1.parent / "missing").as_uri()}, 404, "does not exist"),
    ]
    for body, status, words in cases:
        resp = _load(served, body)
        assert resp.status_code == status, (body, resp.text)
        assert words in resp.json()["error"]["message"], resp.text
        assert _serving(served)["revision"] == before
    out = served.openai().completions.create(model="fixture", prompt="def f(x):", max_tokens=4, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop")


def test_local_actuator_loads_by_the_runtime_contract(
    served: Serving, revisions: dict[str, Path], tmp_path: Path
) -> None:
    """The control plane's LocalActuator, unchanged, drives the real runtime's admin API."""
    token_file = tmp_path / "token"
    token_file.write_text(served.token + "\n")
    actuator = LocalActuator(
        LocalActuatorConfig(
            work_dir=tmp_path / "runs",
            load_urls={"stable": served.url + "/admin/v1/revisions/load"},  # type: ignore[dict-item]
            load_token_file=token_file,
        )
    )
    r1 = revisions["r1"]
    actuator.promote("fixture", "default", "r1", r1.as_uri(), "static", sha256=manifest_sha256(r1))
    now = _serving(served)
    assert (now["revision"], now["sha256"], now["action"]) == ("r1", manifest_sha256(r1), "promote")
    metrics = httpx.get(served.metrics_url, timeout=10).text
    assert 'adaspec_revision_info{adaptive_version="0",revision="r1",role="stable"} 1.0' in metrics
    actuator.rollback("fixture", "default", "r1", "static", None, "test")
    assert _serving(served)["revision"] == "static"


def test_swapping_under_streaming_load_changes_no_output(
    served: Serving, revisions: dict[str, Path], fixture_dir: Path, prompts: list[Prompt]
) -> None:
    reference = CachedLM(load_causal_lm(fixture_dir / "target", "target"))
    chosen = prompts[20:26]
    expected = {
        i: autoregressive_generate(reference, list(p.token_ids), MAX_NEW, eos_token_id=0)
        for i, p in enumerate(chosen)
    }
    got: dict[int, list[list[int]]] = {i: [] for i in expected}
    errors: list[BaseException] = []
    stop = threading.Event()

    def client(i: int) -> None:
        try:
            while not stop.is_set():
                ids: list[int] = []
                stream = served.openai().completions.create(
                    model="fixture",
                    prompt=list(chosen[i].token_ids),
                    max_tokens=MAX_NEW,
                    temperature=0,
                    stream=True,
                    extra_body={"return_token_ids": True},
                )
                for chunk in stream:
                    for c in chunk.choices:
                        ids += list((c.model_extra or {}).get("token_ids") or [])
                got[i].append(ids)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in expected]
    for t in threads:
        t.start()
    try:
        plan = [
            ("r1", revisions["r1"]),
            ("r2", revisions["r2"]),
            ("r3", revisions["r3"]),
            ("r2", revisions["r2"]),
        ]
        for rev, path in plan:
            resp = _load(served, {"revision": rev, "artifact_uri": path.as_uri(), "role": "stable"})
            if rev == "r3":
                assert resp.status_code == 409, resp.text  # tampered: refused, r2 keeps serving
                assert _serving(served)["revision"] == "r1" or _serving(served)["revision"] == "r2"
            else:
                assert resp.status_code == 200, resp.text
                assert resp.json()["revision"] == rev
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors
    assert _serving(served)["revision"] == "r2"
    for i, outputs in got.items():
        assert outputs, f"client {i} finished no request"
        for ids in outputs:
            assert ids == expected[i]
    assert _load(served, {"revision": "static"}).status_code == 200


def test_a_revision_with_token_counts_serves_a_reduced_vocabulary(
    served: Serving, fixture_dir: Path, ranked_draft: Path, prompts: list[Prompt], tmp_path: Path
) -> None:
    """A revision carrying vocab.safetensors (as adapt and a served adaptive draft write it): the runtime
    checks it with the rest, its adaptive draft drafts over the 256 most counted ids, and the output is
    still the target's; counts that do not fit the vocabulary are refused and the revision in place stays."""
    counts = read_counts(ranked_draft, 1024)
    assert counts is not None
    r5 = _revision(fixture_dir, tmp_path / "r5", "r5", counts=counts)
    bad = _revision(fixture_dir, tmp_path / "r6", "r6", counts=torch.ones(1025))
    assert _serving(served)["draft_vocabulary"] == 1024  # the static draft has no counts: the whole head
    resp = _load(served, {"revision": "r5", "artifact_uri": r5.as_uri(), "sha256": manifest_sha256(r5)})
    assert resp.status_code == 200, resp.text
    assert (_serving(served)["revision"], _serving(served)["draft_vocabulary"]) == ("r5", 256)
    resp = _load(served, {"revision": "r6", "artifact_uri": bad.as_uri()})
    assert resp.status_code == 422 and "expected (1024,)" in resp.json()["error"]["message"], resp.text
    assert _serving(served)["revision"] == "r5"
    reference = CachedLM(load_causal_lm(fixture_dir / "target", "target"))
    for p in (prompts[0], prompts[30]):  # Python, Go
        want = autoregressive_generate(reference, list(p.token_ids), MAX_NEW, eos_token_id=0)
        out = served.openai().completions.create(
            model="fixture",
            prompt=list(p.token_ids),
            max_tokens=MAX_NEW,
            temperature=0,
            extra_body={"return_token_ids": True},
        )
        assert list((out.choices[0].model_extra or {}).get("token_ids") or []) == want
    assert _load(served, {"revision": "static"}).status_code == 200
    assert _serving(served)["draft_vocabulary"] == 1024
