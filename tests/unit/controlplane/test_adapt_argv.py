"""The argv both actuators give an adaptation run is parsed by the real `adaspec adapt` parser."""

from __future__ import annotations

import json
from pathlib import Path

from adaspec.cli.main import build_parser
from adaspec.controlplane.actuators import REVISION_DIR, LocalActuator
from adaspec.controlplane.config import KubernetesActuatorConfig, LocalActuatorConfig
from adaspec.controlplane.kube import adaptation_job
from adaspec.operator.builders import CAPTURE_SUBDIR, REVISIONS_SUBDIR, Owner
from adaspec.operator.models import AdaptiveSpeculatorSpec


def test_the_local_actuators_argv_is_what_adapt_parses(tmp_path: Path) -> None:
    cfg = LocalActuatorConfig(
        work_dir=tmp_path / "runs",
        target_model="/models/t",
        capture="/state/capture",
        static_draft="/models/d",
    )
    actuator = LocalActuator(cfg)
    argv = actuator.adapt_argv("chat", "Run_7", None)
    assert argv[0] == "adaspec"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.speculator, args.run_id) == ("adapt", "chat", "Run_7")
    assert (args.parent, args.parent_artifact) == ("static", "/models/d")
    assert (args.target_model, args.capture) == ("/models/t", "/state/capture")
    assert args.out == str(tmp_path / "runs" / "chat" / "Run_7" / REVISION_DIR)
    assert args.revision == "r-run-7"  # a DNS label: the SpeculatorRevision's name part
    # a parent this actuator's earlier run wrote is found by its revision id
    earlier = tmp_path / "runs" / "chat" / "Run_6" / REVISION_DIR
    earlier.mkdir(parents=True)
    (earlier / "manifest.json").write_text(json.dumps({"revision": "r-run-6"}))
    args = build_parser().parse_args(actuator.adapt_argv("chat", "Run_8", "r-run-6")[1:])
    assert (args.parent, args.parent_artifact) == ("r-run-6", str(earlier))


def test_the_kubernetes_jobs_argv_is_what_adapt_parses() -> None:
    """The Job built from an AdaptiveSpeculator: its target, the parent's artifact, the claim's capture
    directory and a revision directory on the claim, registering with a token file it mounts."""
    spec = AdaptiveSpeculatorSpec.model_validate(
        {"targetModel": {"uri": "file:///models/t"}, "storage": {"claimName": "fleet"}}
    )
    cfg = KubernetesActuatorConfig(job_extra_args=["--steps=150"], register_url="http://cp.adaspec:8081")
    job = adaptation_job(Owner("chat", "ml", "u1"), spec, "run-9", "r-run-8", "file:///data/r8", cfg)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["adaspec"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.speculator, args.run_id, args.parent) == ("adapt", "chat", "run-9", "r-run-8")
    assert (args.target_model, args.parent_artifact, args.revision) == (
        "file:///models/t",
        "file:///data/r8",
        "r-run-9",
    )
    assert args.steps == 150 and args.register_url == "http://cp.adaspec:8081"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.capture == f"{mounts['storage']}/{CAPTURE_SUBDIR}"
    assert args.out == f"{mounts['storage']}/{REVISIONS_SUBDIR}/chat/run-9"
    assert Path(args.token_file).parent == Path(mounts["token"])
    (token,) = [v for v in pod["volumes"] if v["name"] == "token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["path"] == Path(args.token_file).name
