"""The closed loop's `adaspec up` settings, shared by `adaspec demo` and the up integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def demo_settings(target: Path, draft: Path, fixtures: bool) -> dict[str, Any]:
    """`adaspec up` settings that isolate the offline loop (drift -> adapt -> gate -> canary -> promotion).

    The runtimes serve the strategy `adaptive` with online learning in effect off and a fixed
    lookahead of three tokens: acceptance then compares like with like across windows and revisions, and
    a drop is the draft's, not the controller's. On the fixtures the static draft's acceptance is about
    0.36 on Python against 0.12 on Go, 6-request windows spreading by a few hundredths; the drift policy's
    slack (0.05) and threshold (0.1) sit inside that gap. Intervals are the `demo` preset's.
    """
    # SmolLM2 on 2 cores: a distillation step (a 128-token span) takes ~0.5 s on an idle machine, a
    # held-out replay a few seconds per request and draft
    adapt = {"last": 40, "steps": 150, "time_budget_s": 300, "min_heldout": 4}
    if fixtures:
        adapt = {"last": 30, "steps": 150, "time_budget_s": 120, "min_heldout": 3}
    return {
        "target_model": str(target),
        "static_draft": draft.resolve().as_uri(),
        "preset": "demo",
        "strategy": "adaptive",
        "canary_share": 0.5,
        "capture_sample_rate": 1.0,
        "runtime": {
            "adaptive": {"computeShare": 0.05, "learningRate": 1e-7},
            "controller": {"minLookahead": 3, "maxLookahead": 3},
        },
        "adapt": adapt,
        "control_plane": {
            "policies": {
                "drift": {
                    "min_draft_tokens": 300,
                    "reference_draft_tokens": 600,
                    "slack": 0.05,
                    "threshold": 0.1,
                }
            }
        },
    }
