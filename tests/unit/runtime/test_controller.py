"""Controller decisions from given estimates and costs."""

from __future__ import annotations

import pytest

from adaspec.runtime.controller import (
    DRAFT_SPIKE,
    DRAFT_WARMUP,
    Controller,
    ControllerConfig,
    CostModel,
    best_lookahead,
    expected_tokens,
    tree_expected_tokens,
)


def test_expected_tokens_matches_leviathan() -> None:
    # a = 0.8, k = 4: E = (1 - a^5) / (1 - a) = 3.36 (arXiv 2211.17192)
    assert expected_tokens([0.8] * 4) == pytest.approx(3.3616)
    assert expected_tokens([]) == 1.0


def test_speedup_formula_example() -> None:
    # S = E / (k c + 1) with c = 0.05: 2.80 in ANCHORS.md
    k, v = best_lookahead([0.8] * 4, lambda n: 0.05 * n, lambda q: 1.0)
    assert k == 4
    assert v == pytest.approx(3.3616 / 1.2, rel=1e-3)


def test_k_is_zero_when_drafting_cannot_pay() -> None:
    # drafting as expensive as the target and modest acceptance: never worth it
    k, _ = best_lookahead([0.5] * 8, lambda n: 1.0 * n, lambda q: 1.0)
    assert k == 0
    # verification cost growing fast with q also kills speculation
    k, _ = best_lookahead([0.6] * 8, lambda n: 0.0, lambda q: float(q))
    assert k == 0


def test_k_grows_with_estimated_acceptance() -> None:
    ks = [
        best_lookahead([a] * 12, lambda n: 0.08 * n, lambda q: 1.0 + 0.01 * q)[0]
        for a in (0.3, 0.6, 0.8, 0.95)
    ]
    assert ks == sorted(ks)
    assert ks[0] < ks[-1]
    assert ks[-1] >= 8


def _controller(**kw: object) -> Controller:
    cfg = ControllerConfig(exploration=0.0, **kw)  # type: ignore[arg-type]
    costs = CostModel({q: 1.0 + 0.02 * q for q in range(1, 10)}, {"static": 0.05, "adaptive": 0.05})
    return Controller(cfg, costs)


def test_switches_to_adaptive_when_it_overtakes_static() -> None:
    ctl = _controller()
    for _ in range(40):  # static: accepted 2 of 4, adaptive: 1 of 4
        ctl.observe("static", [0.5] * 4, 0, 2)
        ctl.observe("adaptive", [0.5] * 4, 0, 1)
    assert ctl.rank(["static", "adaptive"], 8)[0].proposer == "static"
    for _ in range(200):  # the adaptive draft learns: now it gets everything accepted
        ctl.observe("adaptive", [0.5] * 4, 0, 4)
    plans = ctl.rank(["static", "adaptive"], 8)
    assert plans[0].proposer == "adaptive"
    assert plans[0].k > ctl.plan("static", 8).k


def test_prior_from_prequential_accuracy_moves_an_unobserved_proposer() -> None:
    ctl = _controller()
    low = ctl.plan("adaptive", 8)
    ctl.set_prior("adaptive", 0.95)
    high = ctl.plan("adaptive", 8)
    assert high.k > low.k


def test_stopper_stops_on_low_confidence_and_at_cap() -> None:
    ctl = _controller(confidence_threshold=0.3)
    for _ in range(100):
        ctl.observe("static", [0.99, 0.99], 0, 2)  # high confidence: accepted
        ctl.observe("static", [0.1], 0, 0)  # low confidence: rejected
    stop = ctl.stopper("static", 8)
    assert not stop(0, 0.99)
    assert stop(1, 0.05)
    capped = ctl.stopper("static", 2)
    assert not capped(0, 0.99)
    assert capped(1, 0.99)


def test_fixed_mode_always_drafts_k() -> None:
    ctl = _controller(fixed_k=4)
    assert ctl.plan("static", 8).k == 4
    assert ctl.plan("static", 2).k == 2
    assert ctl.choose_k("static", [0.01] * 4, 0, 1.0)[0] == 4


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="k_min"):
        ControllerConfig(k_min=5, k_max=2)
    with pytest.raises(ValueError, match="confidence_threshold"):
        ControllerConfig(confidence_threshold=1.5)


def test_cost_model_interpolates_and_learns() -> None:
    costs = CostModel({1: 1.0, 5: 2.0}, {})
    assert costs.t_verify(3) == pytest.approx(1.5)
    assert costs.t_verify(9) == pytest.approx(3.0)
    costs.observe_draft("suffix", 4, 0.004)
    assert costs.t_draft("suffix", 2) == pytest.approx(0.002)


def test_one_stalled_draft_does_not_make_a_cheap_proposer_expensive() -> None:
    """A first draft stalled 190 ms (a garbage collection, a neighbour) and normal 0.3 ms drafts after
    it: the estimate is the normal cost, the proposer stays cheap; a later stall moves it at most 4x one
    EMA step; a sustained slowdown is still followed."""
    ctl = Controller(ControllerConfig(), CostModel({1: 0.08}, {}))
    costs = ctl.costs
    costs.observe_draft("suffix", 1, 0.19)
    for _ in range(DRAFT_WARMUP):
        costs.observe_draft("suffix", 8, 0.0024)
    assert costs.t_draft("suffix", 1) == pytest.approx(0.0003) and ctl.is_cheap("suffix")
    costs.observe_draft("suffix", 1, 0.19)
    assert costs.t_draft("suffix", 1) == pytest.approx(0.0003 * (1 + costs.alpha * (DRAFT_SPIKE - 1)))
    assert ctl.is_cheap("suffix")
    for _ in range(200):  # every draft now 10x slower: followed
        costs.observe_draft("suffix", 1, 0.003)
    assert costs.t_draft("suffix", 1) == pytest.approx(0.003, rel=0.01)


def test_a_paid_for_draft_that_does_not_pay_to_verify_is_declined_and_still_learned_from() -> None:
    ctl = Controller(ControllerConfig(exploration=0.0), CostModel({1: 1.0, 2: 3.0, 9: 20.0}, {"static": 0.3}))
    # verifying more than the pending token does not pay: the draft, though paid for, is declined
    assert best_lookahead([0.5, 0.5], lambda n: 0.0, lambda q: 0.6 + ctl.costs.t_verify(q))[0] == 0
    k, v = ctl.choose_k("static", [0.5, 0.5], 0, 0.6)
    assert (k, v) == (0, pytest.approx(1 / 1.6))  # plain decoding after the spent draft
    assert ctl.choose_k("static", [], 0, 0.0)[0] == 0
    exploring = Controller(ControllerConfig(exploration=1.0), ctl.costs)
    assert exploring.choose_k("static", [0.5, 0.5], 0, 0.6)[0] == 1  # exploring: one token verified
    assert (
        Controller(ControllerConfig(exploration=0.0, k_min=2), ctl.costs).choose_k(
            "static", [0.5] * 3, 0, 0.6
        )[0]
        == 2
    )  # a configured minimum lookahead still holds
    cheap = _controller()
    assert cheap.plan("static", 8).k > 0  # the prior is optimistic
    for _ in range(60):  # declined drafts, scored against the target's tokens, disagree with them
        cheap.observe_unverified("static", [7, 8], [0.5, 0.5], 0, [3, 4])
    assert cheap.plan("static", 8).k == 0  # so the planner stops drafting with it


def test_an_unverified_draft_is_scored_only_as_far_as_the_target_committed() -> None:
    ctl = _controller()
    ctl.observe_unverified("suffix", [3, 4, 5, 6], [0.9] * 4, 0, [3, 4])  # two agree; past them: unknown
    ctl.observe_unverified("suffix", [3], [0.9], 0, [])  # nothing committed: nothing scored
    reference = _controller()
    reference.observe("suffix", [0.9, 0.9], 0, 2)  # as a verification of two tokens, both accepted
    assert ctl.table.root("suffix") == pytest.approx(reference.table.root("suffix"))
    assert ctl.table.p_position("suffix", 2) == pytest.approx(reference.table.p_position("suffix", 2))
    ctl.observe_unverified("suffix", [3, 9], [0.9] * 2, 0, [3, 4, 5])
    reference.observe("suffix", [0.9, 0.9], 0, 1)  # the second disagrees: rejected there
    assert ctl.table.root("suffix") == pytest.approx(reference.table.root("suffix"))


def test_a_model_draft_that_must_catch_up_first_is_planned_with_that_pass() -> None:
    costs = CostModel({q: 1.0 + 0.1 * (q - 1) for q in range(1, 10)}, {"static": 0.1})
    ctl = Controller(ControllerConfig(exploration=0.0), costs)
    for _ in range(40):
        ctl.observe("static", [0.6] * 2, 0, 1)  # about one token in two accepted
    assert costs.t_sync("static", 300) == 0.0 + costs.t_draft("static", 1)  # no catch-up seen yet: one step
    costs.observe_sync("static", 300, 0.1 + 0.9)  # 300 tokens in 0.9 of a target step beyond one draft step
    assert costs.t_sync("static", 300) == pytest.approx(1.0) and costs.t_sync("static", 0) == 0.0
    caught_up = ctl.plan("static", 8)
    assert caught_up.k >= 1
    behind = ctl.plan("static", 8, behind=300)
    assert behind.k == 0 and behind.tokens_per_second == pytest.approx(1.0)  # the catch-up eats the gain
    rnd = ctl.round(["static"], 8, behind={"static": 300})
    assert rnd.next() is None and rnd.choice() is None  # so it does not draft at all
    costs.observe_sync("static", 10, 50.0)  # one stalled catch-up moves the estimate by a clipped step
    assert costs.sync["static"] <= 0.003 * (1 + 4 * costs.alpha * (DRAFT_SPIKE - 1)) + 1e-12


def test_choose_k_counts_the_spent_draft_once() -> None:
    """A finished draft of d seconds: verifying k of its tokens yields e(k) tokens for d + t_verify(k + 1).

    Counting d twice (as drafting time and again inside the verification) undervalues every k >= 1.
    """
    costs = CostModel({1: 1.0, 2: 1.1, 3: 1.2, 4: 1.3}, {"static": 0.3})
    ctl = Controller(ControllerConfig(exploration=0.0, k_min=0), costs)
    d, confidences = 0.5, [0.9, 0.8, 0.7]
    ps = [ctl.table.p_token("static", i, c, 0) for i, c in enumerate(confidences)]
    k, v = ctl.choose_k("static", confidences, 0, d)
    value = {n: expected_tokens(ps[:n]) / (d + costs.t_verify(n + 1)) for n in range(len(ps) + 1)}
    assert k == max(value, key=lambda n: value[n])
    assert v == pytest.approx(value[k])
    twice = {n: expected_tokens(ps[:n]) / ((d if n else 0.0) + d + costs.t_verify(n + 1)) for n in value}
    assert v > max(twice.values())  # what the double count reported


def _round_controller() -> Controller:
    # suffix: free to draft; static and adaptive: model drafts at 0.1 of a target pass per token
    costs = CostModel(
        {q: 1.0 + 0.02 * q for q in range(1, 10)}, {"suffix": 0.0, "static": 0.1, "adaptive": 0.1}
    )
    return Controller(ControllerConfig(exploration=0.0, k_max=8), costs)


def _drain(rnd: object, offers: dict[str, list[float]]) -> list[str]:
    """Run a round: every proposer asked offers the given confidences (seconds: 0.1 per token)."""
    from adaspec.runtime.controller import ProposeRound

    assert isinstance(rnd, ProposeRound)
    asked = []
    while (plan := rnd.next()) is not None:
        asked.append(plan.proposer)
        conf = offers.get(plan.proposer, [])
        rnd.offer(plan.proposer, conf, 0, 0.1 * len(conf))
    return asked


def test_a_round_drafts_cheap_proposers_first_then_at_most_one_model_draft() -> None:
    ctl = _round_controller()
    assert ctl.is_cheap("suffix") and not ctl.is_cheap("static")
    rnd = ctl.round(["static", "adaptive", "suffix"], 8)
    asked = _drain(rnd, {"suffix": [], "static": [0.9] * 4, "adaptive": [0.9] * 4})
    assert asked[0] == "suffix" and len(asked) == 2  # the suffix had nothing: one model draft, not two
    choice = rnd.choice()
    assert choice is not None and choice.proposer == asked[1] and choice.k >= 1


def test_a_round_skips_the_model_draft_when_the_suffix_draft_in_hand_beats_its_plan() -> None:
    ctl = _round_controller()
    for _ in range(100):  # long suffix matches are always accepted; model drafts rarely
        ctl.observe("suffix", [0.99] * 8, 0, 8)
        ctl.observe("static", [0.5] * 4, 0, 0)
        ctl.observe("adaptive", [0.5] * 4, 0, 0)
    rnd = ctl.round(["static", "adaptive", "suffix"], 8)
    assert _drain(rnd, {"suffix": [0.99] * 8}) == ["suffix"]
    choice = rnd.choice()
    assert choice is not None and (choice.proposer, choice.k) == ("suffix", 8)


def test_a_round_with_nothing_drafted_or_no_room_decodes_plainly() -> None:
    ctl = _round_controller()
    rnd = ctl.round(["suffix"], 8)
    assert _drain(rnd, {}) == ["suffix"] and rnd.choice() is None
    rnd = ctl.round(["static", "suffix"], 0)  # one token left: nothing to draft
    assert rnd.next() is None and rnd.choice() is None


def test_a_fixed_lookahead_round_stops_at_the_first_draft() -> None:
    costs = CostModel({1: 1.0}, {"static": 0.1, "adaptive": 0.1})
    ctl = Controller(ControllerConfig(exploration=0.0, fixed_k=3), costs)
    rnd = ctl.round(["static", "adaptive"], 8)
    assert rnd.k_cap == 3
    asked = _drain(rnd, {"static": [0.1] * 3, "adaptive": [0.1] * 3})
    assert len(asked) == 1
    choice = rnd.choice()
    assert choice is not None and choice.k == 3


def test_a_cheap_proposer_drafts_to_the_cap_and_choose_k_trims_it() -> None:
    ctl = _controller(confidence_threshold=0.3)
    ctl.costs.draft["suffix"] = 1e-6
    for _ in range(100):
        ctl.observe("suffix", [0.1, 0.1], 0, 0)  # low confidence: rejected
    assert ctl.is_cheap("suffix")
    stop = ctl.stopper("suffix", 4)
    assert [stop(i, 0.1) for i in range(4)] == [False, False, False, True]
    k, _ = ctl.choose_k("suffix", [0.1] * 4, 0, 1e-6)
    assert k == 0  # not one of its tokens pays for a longer pass: declined
    for _ in range(100):
        ctl.observe("suffix", [0.9] * 4, 0, 2)  # confident drafts: half accepted
    assert ctl.choose_k("suffix", [0.9] * 4, 0, 1e-6)[0] >= 1


def test_tree_expected_tokens_counts_one_path_where_chains_agree_and_either_where_they_part() -> None:
    a, b = [0.5, 0.5], [0.3, 0.9]
    assert tree_expected_tokens(a, [], 0) == pytest.approx(expected_tokens(a))  # a chain
    assert tree_expected_tokens(a, a, 2) == pytest.approx(expected_tokens(a))  # the same chain twice
    # parted at the first token: reach 1 via a (0.5) or b (0.3); reach 2: 0.25 + 0.27
    assert tree_expected_tokens(a, b, 0) == pytest.approx(1 + 0.8 + 0.52)
    # one shared token: reaching it is the better chain's 0.5; beyond, the sum, at most the fork's 0.5
    assert tree_expected_tokens(a, b, 1) == pytest.approx(1 + 0.5 + 0.5)
    assert tree_expected_tokens([0.9], [0.9], 0) == pytest.approx(2.0)  # never above certainty


def _tree_round(trees: bool) -> tuple[Controller, object]:
    costs = CostModel({q: 1.0 + 0.02 * q for q in range(1, 20)}, {"suffix": 0.0, "static": 0.01})
    ctl = Controller(ControllerConfig(exploration=0.0, k_max=8, max_tree_nodes=12), costs)
    return ctl, ctl.round(["static", "suffix"], 8, trees=trees)


def test_two_drafts_that_part_are_verified_as_one_tree_when_it_pays() -> None:
    ctl, rnd = _tree_round(trees=True)
    from adaspec.runtime.controller import ProposeRound

    assert isinstance(rnd, ProposeRound)
    drafts = {"suffix": (1, 2, 3, 4), "static": (1, 2, 7, 8)}  # shared two tokens, then parted
    for name, toks in drafts.items():  # both drafted (the round's order is tested above)
        rnd.offer(name, [0.6] * 4, 0, 0.01, toks)
    choice = rnd.choice()
    assert choice is not None and len(choice.also) == 1
    ((other, k),) = choice.also
    assert {choice.proposer, other} == {"static", "suffix"} and k == choice.k == 4
    ctl.costs.observe_tree(7, 500.0)  # one pass stalled 500x: clamped, it moves the estimate a little
    assert 1.0 < ctl.costs.tree_overhead < 1.5
    for _ in range(200):  # tree passes really are 4x a chain pass: trees stop paying
        ctl.costs.observe_tree(7, 4.0 * ctl.costs.t_verify(7))
    _, rnd2 = _tree_round(trees=True)
    assert isinstance(rnd2, ProposeRound)
    rnd2.ctl.costs.tree_overhead = ctl.costs.tree_overhead
    for name, toks in drafts.items():
        rnd2.offer(name, [0.6] * 4, 0, 0.01, toks)
    assert rnd2.choice() is not None and rnd2.choice().also == ()  # type: ignore[union-attr]
    for _ in range(2000):  # chain passes meanwhile: the overhead drifts back, trees get retried
        ctl.costs.observe_verify(1, 1.02)
    assert ctl.costs.tree_overhead < 1.1


def test_no_tree_when_not_allowed_or_when_one_draft_holds_the_other() -> None:
    from adaspec.runtime.controller import ProposeRound

    for trees, drafts in (
        (False, {"suffix": (1, 2, 3), "static": (5, 6, 7)}),
        (True, {"suffix": (1, 2, 3), "static": (1, 2)}),
    ):
        _, rnd = _tree_round(trees)
        assert isinstance(rnd, ProposeRound)
        for name, toks in drafts.items():
            rnd.offer(name, [0.6] * len(toks), 0, 0.01, toks)
        choice = rnd.choice()
        assert choice is not None and choice.also == ()
