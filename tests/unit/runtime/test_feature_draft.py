"""The feature-level (EAGLE) draft: valid drafts, no peeking, online learning, vocabulary, persistence."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from adaspec.runtime.models import small_llama
from adaspec.runtime.proposers.adaptive import GATE_WINDOW
from adaspec.runtime.proposers.base import Draft, Proposer, RequestInfo
from adaspec.runtime.proposers.feature import (
    FeatureConfig,
    FeatureProposer,
    pretrain_feature_draft,
    target_features,
)
from adaspec.runtime.proposers.vocab import RECENT_TOKENS, TokenCounts
from adaspec.runtime.sampling import SamplingParams

VOCAB = 128


def _target(seed: int = 0) -> Any:
    """The small random Llama, its output head untied and redrawn: with the tied head a random model
    just repeats its last token, with this one greedy decoding walks structured cycles of tokens."""
    model = small_llama(
        vocab_size=VOCAB,
        hidden=32,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=64,
        max_positions=512,
        seed=seed,
    )
    g = torch.Generator().manual_seed(100 + seed)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32, generator=g))
    return model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tensors this small run fastest on one thread; on a shared machine several are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def target() -> Any:
    return _target()


@torch.no_grad()
def _greedy(model: Any, prompt: Sequence[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model.lm_head(target_features(model, ids)[-1]).argmax()))
    return ids[len(prompt) :]


@dataclass
class Served:
    output: list[int]
    accepted: int
    drafted: int
    agreement: float  # teacher-forced top-1 agreement on this request's generated positions, before learning


@torch.no_grad()
def _serve(prop: FeatureProposer, model: Any, prompt: Sequence[int], n: int, k: int = 4) -> Served:
    """Greedy speculative decoding, feeding features exactly as the engine does (prefill, then per step)."""
    prop.begin(RequestInfo(prompt_ids=tuple(prompt)))
    ctx = list(prompt)
    prop.observe_features(0, target_features(model, ctx)[: len(ctx) - 1])  # the last prompt token is pending
    out: list[int] = []
    accepted = drafted = 0
    while len(out) < n:
        draft = prop.propose(ctx, min(k, n - len(out) - 1), None)
        h = target_features(model, ctx + list(draft.token_ids))  # [L + k, H]
        logits = model.lm_head(h)
        old, acc = len(ctx), 0
        while acc < draft.k and int(logits[old - 1 + acc].argmax()) == draft.token_ids[acc]:
            acc += 1
        committed = [*draft.token_ids[:acc], int(logits[old - 1 + acc].argmax())]
        prop.observe_features(old - 1, h[old - 1 : old + acc])  # pending + accepted rows
        ctx += committed
        out += committed
        prop.observe(ctx, len(committed), logits[old - 1 : old + acc])
        accepted, drafted = accepted + acc, drafted + draft.k
    agreement = prop.evaluate(ctx, target_features(model, ctx), len(prompt))
    prop.end(out)
    return Served(out, accepted, drafted, agreement)


def _fed(prop: FeatureProposer, model: Any, ctx: Sequence[int], seen: Sequence[int] | None = None) -> None:
    """Begin a request for context `ctx`; give it at once the features of all but its last position, or
    those of every position of `seen` (a longer sequence) when given."""
    prop.begin(RequestInfo(prompt_ids=tuple(ctx)))
    prop.observe_features(
        0, target_features(model, ctx)[:-1] if seen is None else target_features(model, seen)
    )


def test_features_are_what_the_head_reads(target: Any) -> None:
    ids = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = target(input_ids=ids, output_hidden_states=True)
        h = target_features(target, ids[0].tolist())  # [T, H]
    torch.testing.assert_close(target.lm_head(h), out.logits[0])
    torch.testing.assert_close(h, out.hidden_states[-1][0])  # transformers 5: the last one is normed


def test_drafts_are_valid_in_greedy_and_sampling_modes(target: Any) -> None:
    prop = FeatureProposer(target, FeatureConfig(vocab_size=48))
    assert isinstance(prop, Proposer) and prop.needs_features
    ctx = list(range(3, 23))
    _fed(prop, target, ctx)
    ids = set(prop.vocab.ids.tolist())
    greedy = prop.propose(ctx, 5, None)
    assert greedy.k == 5 and greedy.probs is None and set(greedy.token_ids) <= ids
    assert all(0.0 <= c <= 1.0 for c in greedy.confidence)
    assert prop.propose(ctx, 5, lambda i, c: i == 1).k == 2  # `stop` is asked after each token
    assert prop.propose(ctx, 0, None).k == 0
    again = prop.propose(ctx, 5, None)  # drafted steps never stay in the cache
    assert again.token_ids == greedy.token_ids
    assert again.confidence == pytest.approx(greedy.confidence, abs=1e-5)
    for sampling in (
        SamplingParams(temperature=0.8, top_k=20, top_p=0.9, seed=3),
        SamplingParams(temperature=1.0, seed=5, reproducible=True),
    ):
        prop.begin(
            RequestInfo(prompt_ids=tuple(ctx), sampling=sampling, generator=torch.Generator().manual_seed(1))
        )
        prop.observe_features(0, target_features(target, ctx)[:-1])
        draft = prop.propose(ctx, 6, None)
        assert draft.k == 6 and draft.probs is not None and draft.probs.shape == (6, VOCAB)
        q = draft.probs
        assert bool((q >= 0).all()) and torch.allclose(q.sum(-1), torch.ones(6), atol=1e-5)
        outside = torch.ones(VOCAB, dtype=torch.bool)
        outside[prop.vocab.ids] = False
        assert float(q[:, outside].abs().sum()) == 0.0  # nothing outside the reduced vocabulary
        assert bool((q[torch.arange(6), list(draft.token_ids)] > 0).all())


def test_bad_feature_rows_raise_value_errors(target: Any) -> None:
    prop = FeatureProposer(target, FeatureConfig(vocab_size=48))
    prop.begin(RequestInfo(prompt_ids=(1, 2, 3)))
    with pytest.raises(ValueError, match=r"hidden must be \[n, 32\]"):
        prop.observe_features(0, torch.zeros(2, 31))
    with pytest.raises(ValueError, match="gap"):
        prop.observe_features(1, torch.zeros(2, 32))
    with pytest.raises(ValueError, match="Llama-architecture"):
        FeatureProposer(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        FeatureConfig(batch_size=0)


def test_the_net_is_causal_over_its_steps(target: Any) -> None:
    net = FeatureProposer(target).net
    g = torch.Generator().manual_seed(0)
    feats, embeds = torch.randn(12, 32, generator=g), torch.randn(12, 32, generator=g)
    base, _ = net(feats, embeds, 0)  # [12, H]
    changed = feats.clone(), embeds.clone()
    changed[0][7:] += 1.0
    changed[1][7:] -= 1.0
    moved, _ = net(*changed, 0)
    torch.testing.assert_close(moved[:7], base[:7])
    assert not torch.allclose(moved[7], base[7])
    # the cached path (5 steps, then 7) equals the one-pass one
    head, kv = net(feats[:5], embeds[:5], 0)
    tail, _ = net(feats[5:], embeds[5:], 5, kv)
    torch.testing.assert_close(torch.cat([head, tail]), base, atol=1e-5, rtol=1e-5)
    # training-time test: unrolled pass j at step t is drafting step j after true steps < t-j+2
    passes = net.unrolled(feats, embeds, 0, 3)
    torch.testing.assert_close(passes[0], base)
    for t in (2, 6, 11):
        first, kv = net(feats[: t - 1], embeds[: t - 1], 0)  # true steps 0..t-2
        second, kv = net(first[-1:], embeds[t - 1 : t], t - 1, kv)  # depth 2 at step t-1
        torch.testing.assert_close(second[0], passes[1][t - 1], atol=1e-5, rtol=1e-5)
        third, _ = net(second, embeds[t : t + 1], t, kv)  # depth 3 at step t
        torch.testing.assert_close(third[0], passes[2][t], atol=1e-5, rtol=1e-5)


def test_drafts_read_only_positions_before_the_pending_token(target: Any) -> None:
    cfg = FeatureConfig(vocab_size=VOCAB, lr=1e-2, steps_per_request=4)
    prop = FeatureProposer(target, cfg)
    _serve(prop, target, [5, 9, 17, 33, 2, 71], 10)  # trained a little, so drafts are not trivial
    saved = prop.state_dict_for_save()
    prompt = [7, 1, 90, 4, 66, 12, 8]
    out = _serve(prop, target, prompt, 12).output  # engine-style feeding: prefill, then step by step
    ctx = prompt + out
    prop.load_saved(saved)
    stepwise: list[Draft] = []
    _fed(prop, target, prompt)
    for n in range(len(out)):  # grow the context one committed token at a time, one cache throughout
        if n:
            row = target_features(target, ctx[: len(prompt) + n - 1])[-1:]  # [1, H]: the new committed one
            prop.observe_features(len(prompt) + n - 2, row)
        stepwise.append(prop.propose(ctx[: len(prompt) + n], 3, None))
    for n in (0, 5, 11):
        at = ctx[: len(prompt) + n]
        fresh = FeatureProposer(target, cfg)
        fresh.load_saved(saved)
        _fed(fresh, target, at)
        one_shot = fresh.propose(at, 3, None)
        _fed(fresh, target, at, seen=ctx)  # the future's features too: they must not matter
        peeking = fresh.propose(at, 3, None)
        assert stepwise[n].token_ids == one_shot.token_ids == peeking.token_ids
        assert stepwise[n].confidence == pytest.approx(one_shot.confidence, abs=1e-5)
        # the first drafted token is the teacher-forced prediction from features of positions < L-1
        h = target_features(target, at)
        prev = torch.cat([torch.zeros(1, 32), h[:-1]])  # [L, H]: f_{t-1} at step t
        with torch.no_grad():
            pred = fresh.net(prev, F.embedding(torch.tensor(at), fresh.parts.embed), 0)[0][-1]  # [H]
        assert int(fresh.vocab.ids[(pred @ fresh.vocab.head.T).argmax()]) == one_shot.token_ids[0]


def test_online_learning_raises_held_out_agreement(target: Any) -> None:
    # Traffic: windows of the target's own greedy stream (periodic runs of tokens). Each request's
    # agreement is measured before the draft learns from it, so it is held out. The training copy is
    # served once it is ahead on GATE_WINDOW requests in a row, so learning shows after a few requests.
    stream = [1, 2, 3, 4, *_greedy(target, [1, 2, 3, 4], 230)]
    estimates: list[tuple[str, float]] = []
    cfg = FeatureConfig(vocab_size=64, lr=1e-2, steps_per_request=8, seed=0)
    prop = FeatureProposer(target, cfg, on_estimate=lambda n, a: estimates.append((n, a)))
    served = [_serve(prop, target, stream[o : o + 16], 32) for o in range(0, 240, 20)]
    agreement = [round(s.agreement, 3) for s in served]
    acceptance = [round(s.accepted / max(1, s.drafted), 3) for s in served]
    print(f"held-out agreement per request {agreement}; acceptance {acceptance}")
    assert agreement[0] < 0.15  # about chance before learning
    assert prop.learner.version >= 1
    assert sum(agreement[-4:]) / 4 > 0.5  # one window of the stream is harder than the rest
    assert sum(acceptance[:3]) / 3 < 0.15 and sum(acceptance[-4:]) / 4 > 0.3  # drafts get accepted
    assert estimates and estimates[-1][0] == "feature" and estimates[-1][1] == prop.prequential_accuracy


def test_reduced_vocabulary_follows_served_tokens(target: Any) -> None:
    counts = TokenCounts(VOCAB, 4, horizon=100.0, margin=0.01)
    counts.add([9, 9, 9, 8, 8, 7, 7, 6, 6, 5, 200, -1])  # out-of-range ids are ignored
    assert counts.rerank() and counts.ids.tolist() == [6, 7, 8, 9]
    assert not counts.rerank()  # nothing moved
    for _ in range(30):
        counts.add([50, 51, 52, 53])
    assert float(counts.counts.sum()) <= 100.0  # bounded: the table halves past its horizon
    assert counts.rerank() and counts.ids.tolist() == [50, 51, 52, 53]

    prop = FeatureProposer(target, FeatureConfig(vocab_size=16, count_horizon=400.0))
    first = list(range(100, 116))
    prop.begin(RequestInfo(prompt_ids=tuple(first * 2)))
    assert prop.vocab.ids.tolist() == first  # seeded from the first prompt at once
    prop.end(first)
    second = list(range(20, 36))
    for _ in range(4):  # traffic moves to other tokens: the ranking follows, between requests
        prop.begin(RequestInfo(prompt_ids=tuple(second * 2)))
        prop.end(second)
    prop.begin(RequestInfo(prompt_ids=tuple(second)))
    assert prop.vocab.ids.tolist() == second
    assert prop.vocab.head.shape == (16, 32) and prop.learner.vocab is prop.vocab
    torch.testing.assert_close(prop.vocab.head, target.lm_head.weight[20:36])
    ctx = [20, 21, 22, 23, 24]
    prop.observe_features(0, target_features(target, ctx)[:-1])
    assert set(prop.propose(ctx, 4, None).token_ids) <= set(second)


def test_a_shift_re_ranks_the_vocabulary_within_a_request_of_a_large_offline_table() -> None:
    """An offline corpus's counts dwarf one request; the new language's frequent tokens still enter at once
    (judged on the whole table, 40 tokens against 30 k counted would not have moved it)."""
    counts = TokenCounts(VOCAB, 4, horizon=1e9, margin=0.01)
    counts.counts[1:4] = 10_000.0  # a loaded offline table: three ids; the ranking [0, 1, 2, 3] holds them
    counts.add([1, 2, 3] * 50)  # the same language: nothing to move for
    assert not counts.rerank()
    counts.add([40] * 30 + [41] * 10)  # a shift
    assert counts.rerank() and counts.ids.tolist() == [1, 2, 3, 40]
    assert not counts.rerank()  # judged on the tokens since the last ranking: none yet
    for _ in range(300):  # recent traffic is a bounded window, so a long stay does not dilute a shift
        counts.add([40, 1])
    assert float(counts.recent.sum()) <= RECENT_TOKENS
    counts.add([50] * 600)
    assert counts.rerank() and 50 in counts.ids.tolist()


def test_save_load_round_trip_gives_identical_drafts(target: Any, tmp_path: Any) -> None:
    from safetensors.torch import load_file, save_file

    cfg = FeatureConfig(vocab_size=40, lr=1e-2, steps_per_request=3)
    prop = FeatureProposer(target, cfg)
    for prompt in ([3, 1, 4, 1, 5, 9], [2, 7, 1, 8, 2, 8]):
        _serve(prop, target, prompt, 8)
    tensors = prop.state_dict_for_save()
    ptrs = [t.untyped_storage().data_ptr() for t in tensors.values()]
    assert len(set(ptrs)) == len(ptrs) and all(t.is_contiguous() for t in tensors.values())
    save_file(tensors, str(tmp_path / "feature.safetensors"))
    loaded = FeatureProposer(target, cfg)
    loaded.load_saved(load_file(str(tmp_path / "feature.safetensors")))
    assert torch.equal(loaded.vocab.ids, tensors["vocab.ids"])
    ctx = [6, 6, 1, 2, 30, 31, 32, 33]
    for sampling in (SamplingParams(), SamplingParams(temperature=0.7, seed=11)):
        drafts = []
        for p in (prop, loaded):
            p.begin(RequestInfo(tuple(ctx), sampling=sampling, generator=torch.Generator().manual_seed(4)))
            p.observe_features(0, target_features(target, ctx)[:-1])
            drafts.append(p.propose(ctx, 5, None))
        assert drafts[0].token_ids == drafts[1].token_ids and drafts[0].confidence == drafts[1].confidence
    bad = dict(tensors, **{"meta.dims": torch.tensor([1, 2, 3, 4, 5])})
    with pytest.raises(ValueError, match="meta.dims"):
        loaded.load_saved(bad)
    with pytest.raises(ValueError, match="vocab.ids"):
        loaded.load_saved(dict(tensors, **{"vocab.ids": torch.zeros(40, dtype=torch.long)}))


@pytest.mark.parametrize(
    "weights", [{}, {"token_weight": 0.0, "top1_weight": 0.0}], ids=["all", "feature-only"]
)
def test_pretraining_on_token_sequences_fits_them(target: Any, weights: dict[str, Any]) -> None:
    seqs = [[p, *_greedy(target, [p, p + 1], 30)] for p in (10, 60)]
    prop = FeatureProposer(target, FeatureConfig(vocab_size=VOCAB, lr=1e-2, **weights))
    before = [prop.evaluate(s, target_features(target, s)) for s in seqs]
    losses: list[float] = []
    pretrain_feature_draft(prop, seqs, 40, progress=lambda step, loss: losses.append(loss))
    after = [prop.evaluate(s, target_features(target, s)) for s in seqs]
    assert len(losses) == 40 and losses[-1] < losses[0]
    print(f"pretraining {weights}: agreement {before} -> {after}")
    assert min(after) > 0.5 > max(before) and prop.served_version == prop.learner.version


def test_background_training_publishes_weights_only_between_requests(target: Any) -> None:
    """The same request again and again: the worker learns it, the training copy gets ahead of the served
    weights on the requests it has not learned from yet and is published; serving swaps it in only when
    a request begins."""
    cfg = FeatureConfig(vocab_size=64, lr=1e-2, background=True, compute_share=0.5, steps_per_request=4)
    prop = FeatureProposer(target, cfg)
    try:
        before = {k: v.clone() for k, v in prop.net.state_dict().items()}
        outputs = []
        deadline = time.monotonic() + 60
        while prop.learner.version == 0 and time.monotonic() < deadline:
            outputs.append(_serve(prop, target, [1, 2, 3, 4], 12).output)
            time.sleep(0.1)  # the worker judges the request, then learns from it
        assert prop.learner.version > 0, "the training copy never got ahead of the served weights"
        assert len(outputs) >= 1 + GATE_WINDOW  # one request to learn from, then a win on each of the next
        if prop.served_version == 0:  # published after the last request began: not drafting with it yet
            assert all(torch.equal(before[k], v) for k, v in prop.net.state_dict().items())
        prop.begin(RequestInfo(prompt_ids=(1, 2, 3, 4)))  # the next request swaps the snapshot in
        assert prop.served_version > 0
        assert any(not torch.equal(before[k], v) for k, v in prop.net.state_dict().items())
        outputs.append(_serve(prop, target, [1, 2, 3, 4], 12).output)
        assert len(set(map(tuple, outputs))) == 1  # drafts never change the output
    finally:
        prop.close()
    assert prop.trainer.worker is not None and not prop.trainer.worker.is_alive()


def test_the_gate_never_publishes_training_weights_that_fall_behind(target: Any) -> None:
    """A draft pretrained on the traffic, whose training copy is then damaged: serving keeps the good
    weights request after request (without the gate every step was published)."""
    stream = [1, 2, 3, 4, *_greedy(target, [1, 2, 3, 4], 120)]
    prompts = [stream[o : o + 16] for o in range(0, 120, 20)]
    cfg = FeatureConfig(vocab_size=64, lr=1e-2, steps_per_request=2, seed=0)
    prop = FeatureProposer(target, cfg)
    pretrain_feature_draft(prop, [[*p, *_greedy(target, p, 24)] for p in prompts], 150)
    good = {k: v.clone() for k, v in prop.net.state_dict().items()}
    version = prop.learner.version
    for group in prop.learner.opt.param_groups:  # online steps too small to repair the damage below
        group["lr"] = 1e-9
    with torch.no_grad():
        for p in prop.learner.net.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean().clamp_min(1e-3))
    served = [_serve(prop, target, p, 24) for p in prompts]
    assert prop.learner.version == version and prop.served_version == version
    assert all(torch.equal(good[k], v) for k, v in prop.net.state_dict().items())
    assert sum(s.agreement for s in served) / len(served) > 0.5  # still drafting with the good weights
