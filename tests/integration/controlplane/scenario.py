"""The drift -> adapt -> candidate -> canary -> promote story over simulated minutes, shared by tests."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from adaspec.controlplane.config import Settings
from adaspec.controlplane.service import ControlPlane
from adaspec.controlplane.store.models import DecisionRecord
from adaspec.controlplane.wiring import Store, build

from .fleet import LOAD_TOKEN, Fleet, RateFn

T0 = datetime(2026, 3, 1, tzinfo=UTC)

ADAPT_SCRIPT = """
import json, pathlib, sys
out = pathlib.Path(sys.argv[1]); rev = sys.argv[2]; log = pathlib.Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)  # the run's revision directory, beside its adapt.log
with log.open("a") as f:
    f.write(out.parent.name + "\\n")
(out / "model.safetensors").write_bytes(b"weights")
manifest = {"revision": rev, "parent": sys.argv[4], "metrics": {"replay_acceptance": 0.71}}
(out / "manifest.json").write_text(json.dumps(manifest))
"""


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def settings(fleet: Fleet, tmp: Path, db_url: str, candidate: str = "r1", initial: str = "r0") -> Settings:
    script = tmp / "adapt.py"
    script.write_text(ADAPT_SCRIPT)
    (tmp / "load-token").write_text(f"# the runtime's admin token\n{LOAD_TOKEN}\n")
    return Settings.model_validate(
        {
            "db_url": db_url,
            "speculators": [
                {
                    "name": "chat",
                    "initial_revision": initial,
                    "endpoints": [
                        {"url": fleet.url("stable")},
                        {"url": fleet.url("canary"), "role": "canary"},
                    ],
                }
            ],
            "policies": {
                "drift": {"min_draft_tokens": 2000, "reference_draft_tokens": 16000, "threshold": 0.15},
                "adaptation": {"cooldown_s": 600, "max_concurrent": 1, "budget_runs": 3},
                "canary": {"interval_s": 120, "min_draft_tokens": 4000, "iterations": 3},
                "guard": {"window_s": 900, "min_draft_tokens": 8000, "max_drop": 0.03},
            },
            "actuator": "local",
            "local": {
                "adapt_command": [
                    sys.executable,
                    str(script),
                    "{out}",
                    candidate,
                    str(tmp / "adapt-calls.log"),
                    "{parent}",
                ],
                "work_dir": str(tmp / "runs"),
                "load_url": f"{fleet.base}/load",
                "load_token_file": str(tmp / "load-token"),
            },
        }
    )


def drifting(candidate_rate: float, after_promotion: float | None = None, initial: str = "r0") -> RateFn:
    """`initial` (r0) serves 0.70, then traffic drifts at minute 10 and it falls to 0.45; r1 serves
    `candidate_rate` (and `after_promotion` once it is the stable revision, to model a regression canary
    traffic missed)."""

    def rate(revision: str, role: str, minute: int) -> float:
        if revision == initial:
            return 0.70 if minute < 10 else 0.45
        if role == "stable" and after_promotion is not None:
            return after_promotion
        return candidate_rate

    return rate


def run(cp: ControlPlane, fleet: Fleet, minutes: range) -> ControlPlane:
    """Advance the fleet and tick once per simulated minute."""
    for minute in minutes:
        fleet.advance(minute)
        cp.tick(at(minute))
        wait = getattr(cp.actuator, "wait", None)
        if wait is not None:
            wait(30.0)  # let a just-started adaptation subprocess finish before the next minute
    return cp


def start(st: Settings, store: Store) -> ControlPlane:
    return build(st, store, clock=lambda: T0)


def kinds(store: Store) -> list[str]:
    """Kinds of the decisions in the audit log, oldest first."""
    with store.factory() as s:
        return list(s.execute(select(DecisionRecord.kind).order_by(DecisionRecord.id)).scalars())
