"""Counter deltas across scrapes: normal increase, first scrape, pod restart (reset)."""

from __future__ import annotations

import pytest

from adaspec.controlplane.counters import Counters, delta, is_reset


def c(drafts: float, tokens: float, accepted: float, pos: tuple[float, ...] = ()) -> Counters:
    return Counters(drafts=drafts, draft_tokens=tokens, accepted=accepted, per_position=pos)


@pytest.mark.parametrize(
    ("prev", "cur", "want"),
    [
        (None, c(10, 40, 20), Counters()),
        (c(10, 40, 20, (9, 6)), c(15, 60, 30, (13, 9)), c(5, 20, 10, (4, 3))),
        (c(10, 40, 20), c(3, 12, 6), c(3, 12, 6)),  # restart: counters began again at zero
        (c(10, 40, 20, (9, 6)), c(10, 40, 20, (9, 6, 1)), c(0, 0, 0, (0, 0, 1))),  # new position label
        (c(10, 40, 20, (9, 6)), c(11, 44, 21, (2,)), c(11, 44, 21, (2,))),  # per-position reset only
    ],
)
def test_delta(prev: Counters | None, cur: Counters, want: Counters) -> None:
    assert delta(prev, cur) == want


def test_reset_detection() -> None:
    assert is_reset(c(10, 40, 20), c(10, 40, 19))
    assert not is_reset(c(10, 40, 20), c(10, 40, 20))


def test_figures() -> None:
    w = c(10, 40, 30)
    assert w.acceptance_rate == pytest.approx(0.75)
    assert w.mean_accepted_length == pytest.approx(4.0)
    assert Counters().acceptance_rate is None
    assert (c(1, 4, 2) + c(1, 4, 4)).acceptance_rate == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown name 'tps'"):
        w.metric("tps")
