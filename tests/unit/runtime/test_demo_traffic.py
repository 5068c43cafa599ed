"""The demo's traffic order: the shift to the second language waits for the drift detector's reference."""

from __future__ import annotations

import itertools
from pathlib import Path

from adaspec.runtime.demo.main import Models, Traffic
from adaspec.runtime.demo.report import Timeline
from adaspec.runtime.workloads import Prompt


def _prompts(lang: str, n: int) -> list[Prompt]:
    return [Prompt(lang, f"{lang}-{i}", 0, (i,)) for i in range(n)]


def test_the_shift_waits_until_the_drift_reference_is_made_of_the_first_language() -> None:
    timeline = Timeline(started=0.0)
    models = Models(
        Path("target"), Path("draft"), [("python", _prompts("python", 3)), ("go", _prompts("go", 2))]
    )
    traffic = Traffic("http://127.0.0.1:9/v1", models, 8, 100, timeline, pause_s=0.0)
    order = traffic._sequence()
    # no view of the control plane yet, then a detector still building its reference: Python, cycling
    first = [lang for lang, _ in itertools.islice(order, 5)]
    timeline.speculator = {"phase": "steady", "drift": {"reference": None, "statistic": 0.0}}
    first += [lang for lang, _ in itertools.islice(order, 2)]
    assert first == ["python"] * 7
    timeline.speculator = {"phase": "steady", "drift": {"reference": 0.36, "statistic": 0.0}}
    then = list(itertools.islice(order, 5))
    assert [lang for lang, _ in then] == ["go"] * 5
    assert [p.file_id for _, p in then] == ["go-0", "go-1", "go-0", "go-1", "go-0"]


def test_the_first_language_is_sent_whole_even_with_a_reference_at_hand() -> None:
    timeline = Timeline(started=0.0)
    timeline.speculator = {"drift": {"reference": 0.36}}
    models = Models(
        Path("target"), Path("draft"), [("python", _prompts("python", 3)), ("go", _prompts("go", 1))]
    )
    order = Traffic("http://127.0.0.1:9/v1", models, 8, 100, timeline, pause_s=0.0)._sequence()
    assert [lang for lang, _ in itertools.islice(order, 4)] == ["python"] * 3 + ["go"]
