"""The real `openai` client against a real `adaspec serve`: output equals the target's own greedy decoding."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from adaspec.runtime.engine import autoregressive_generate
from adaspec.runtime.models import CachedLM, load_causal_lm, load_tokenizer
from adaspec.runtime.sampling import SamplingParams
from adaspec.runtime.workloads import Prompt

from .serving import Serving, adaspec

MAX_NEW = 24


@pytest.fixture(scope="module")
def texts(fixture_dir: Path, prompts: list[Prompt]) -> list[str]:
    """The prompts as text (clients send text; the server tokenizes it)."""
    tok = load_tokenizer(fixture_dir / "target")
    return [str(tok.decode(list(p.token_ids))) for p in prompts]


@pytest.fixture(scope="module")
def reference(fixture_dir: Path) -> CachedLM:
    """The target alone (plain autoregressive decoding is the reference)."""
    return CachedLM(load_causal_lm(fixture_dir / "target", "target"))


def _greedy(served: Serving, prompt: str, **extra: object) -> tuple[str, list[int], str]:
    out = served.openai().completions.create(
        model="fixture",
        prompt=prompt,
        max_tokens=MAX_NEW,
        temperature=0,
        extra_body={"return_token_ids": True, **extra},
    )
    choice = out.choices[0]
    return choice.text, list(choice.model_extra["token_ids"]), str(choice.finish_reason)


def test_completions_equal_adaspec_generate_target_only(
    served: Serving, fixture_dir: Path, texts: list[str]
) -> None:
    """The CLI's target-only decoding and the server's hybrid decoding produce the same tokens."""
    for text in (texts[0], texts[30]):  # one Python, one Go
        cli = subprocess.run(
            [
                *adaspec(),
                "generate",
                f"--target={fixture_dir / 'target'}",
                "--strategy=target-only",
                f"--prompt={text}",
                f"--max-new-tokens={MAX_NEW}",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        expected = json.loads(cli.stdout)
        out, ids, _ = _greedy(served, text)
        assert ids == expected["token_ids"]
        assert out == expected["text"]


def test_greedy_is_lossless_on_many_prompts(
    served: Serving, reference: CachedLM, prompts: list[Prompt]
) -> None:
    """Token-id prompts of both languages, hybrid decoding through HTTP: the target's own tokens."""
    drafted = 0
    for p in prompts[::3]:  # 18 prompts
        ids = list(p.token_ids)
        expected = autoregressive_generate(reference, ids, MAX_NEW, eos_token_id=0)
        out = served.openai().completions.create(
            model="fixture",
            prompt=ids,
            max_tokens=MAX_NEW,
            temperature=0,
            extra_body={"return_token_ids": True, "speculation_stats": True},
        )
        assert list(out.choices[0].model_extra["token_ids"]) == expected
        stats = out.model_extra["speculation"]
        drafted += sum(s["draft_tokens"] for s in stats["per_speculator"].values())
        assert out.usage is not None and out.usage.completion_tokens == len(expected)
        assert out.usage.prompt_tokens == len(ids)
    assert drafted > 0, "the hybrid never drafted: the test would not show losslessness"


def test_streaming_equals_non_streaming(served: Serving, texts: list[str]) -> None:
    client = served.openai()
    for prompt in texts[1:40:13]:
        text, ids, finish = _greedy(served, prompt)
        pieces, finishes, usage = [], [], None
        stream = client.completions.create(
            model="fixture",
            prompt=prompt,
            max_tokens=MAX_NEW,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                pieces.append(c.text)
                finishes.append(c.finish_reason)
        assert "".join(pieces) == text
        assert [f for f in finishes if f] == [finish]
        assert usage is not None and usage.completion_tokens == len(ids)


def test_chat_uses_the_template_and_streams_the_same(served: Serving, fixture_dir: Path) -> None:
    client = served.openai()
    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "def add(a, b):"},
    ]
    full = client.chat.completions.create(
        model="fixture", messages=messages, max_tokens=MAX_NEW, temperature=0
    )
    text = full.choices[0].message.content
    assert full.choices[0].message.role == "assistant" and text
    # the template's rendering, decoded greedily by the target alone, gives the same text
    tok = load_tokenizer(Path(served_target(served)))
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok.encode(rendered, add_special_tokens=False)
    ref = CachedLM(load_causal_lm(fixture_dir / "target", "target"))
    assert text == tok.decode(
        autoregressive_generate(ref, ids, MAX_NEW, eos_token_id=0), skip_special_tokens=True
    )
    assert full.usage is not None and full.usage.prompt_tokens == len(ids)
    streamed = client.chat.completions.create(
        model="fixture", messages=messages, max_tokens=MAX_NEW, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


def served_target(served: Serving) -> str:
    """The --target-model of a running serve (read back from its command line)."""
    args = served.proc.args
    assert isinstance(args, list)
    return next(str(a).split("=", 1)[1] for a in args if str(a).startswith("--target-model="))


def test_stop_strings_cut_the_text_and_stop(served: Serving, texts: list[str]) -> None:
    prompt = texts[2]
    text, _, _ = _greedy(served, prompt)
    assert len(text) > 6
    stop = text[3:6]  # a string the greedy continuation is known to contain
    cut = text[: text.index(stop)]
    out = served.openai().completions.create(
        model="fixture", prompt=prompt, max_tokens=MAX_NEW, temperature=0, stop=[stop, "\x00never"]
    )
    assert out.choices[0].text == cut
    assert out.choices[0].finish_reason == "stop"
    stream = served.openai().completions.create(
        model="fixture", prompt=prompt, max_tokens=MAX_NEW, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == cut


def test_seeded_sampling_is_reproducible_and_equals_the_target_alone(
    served: Serving, reference: CachedLM, prompts: list[Prompt]
) -> None:
    """A seed names one output: the same on every request and the same as the target's own seeded
    sampling without speculation (Gumbel-max keyed by seed and position)."""
    client = served.openai()
    ids = list(prompts[5].token_ids)

    def sample(seed: int) -> list[int]:
        out = client.completions.create(
            model="fixture",
            prompt=ids,
            max_tokens=MAX_NEW,
            temperature=0.9,
            top_p=0.95,
            seed=seed,
            extra_body={"return_token_ids": True, "top_k": 50},
        )
        return list(out.choices[0].model_extra["token_ids"])

    a, b = sample(7), sample(7)
    assert a == b
    params = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=7, reproducible=True)
    assert a == autoregressive_generate(reference, ids, MAX_NEW, params, eos_token_id=0)
    assert any(sample(s) != a for s in (8, 9, 10)), "different seeds never changed the sample"


def test_models_lists_the_served_model(served: Serving) -> None:
    models = served.openai().models.list()
    assert [m.id for m in models.data] == ["fixture"]
