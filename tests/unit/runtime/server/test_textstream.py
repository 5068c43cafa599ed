"""TextStream: incremental detokenisation with stop strings, on a real byte-level BPE tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from adaspec.runtime.server.textstream import REPLACEMENT, TextStream

CORPUS = ["def foo(x):\n    return x + 1\n", "hello world STOP the end", "END of line"] * 10


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    """A tiny byte-level BPE tokenizer (the fixture models' kind), trained here in ~0.1 s."""
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    t.train_from_iterator(CORPUS, trainer)
    return t


def _ids(tok: Tokenizer, *pieces: str) -> list[list[int]]:
    """The ids of each piece, checked to decode back to the pieces' concatenation."""
    out = [list(tok.encode(p).ids) for p in pieces]
    assert tok.decode([i for ids in out for i in ids]) == "".join(pieces)
    return out


def _run(stream: TextStream, pushes: Sequence[Sequence[int]]) -> list[str]:
    """Push each group of ids, then finish; return every emitted piece (finish's last)."""
    return [stream.push(ids) for ids in pushes] + [stream.finish()]


def test_no_stop_strings_emits_everything_and_concatenation_is_the_text(tok: Tokenizer) -> None:
    pieces = ["def foo(x):", "\n    return", " x + 1\n"]
    stream = TextStream(tok)
    out = _run(stream, _ids(tok, *pieces))
    assert out[:3] == pieces  # nothing to hold back: each push is emitted at once
    assert out[3] == ""
    assert "".join(out) == stream.text == "".join(pieces)
    assert not stream.stopped


def test_stop_string_spanning_two_pushes(tok: Tokenizer) -> None:
    stream = TextStream(tok, stop=["STOP"])
    first = stream.push(_ids(tok, "hello ST")[0])
    assert "ST" not in first and "hello ST".startswith(first)  # the possible start of STOP is held
    second = stream.push(_ids(tok, "OP world")[0])
    assert stream.stopped
    assert stream.text == "hello "
    assert first + second == "hello "
    assert stream.finish() == ""


def test_earliest_of_several_stop_strings_wins(tok: Tokenizer) -> None:
    # "END" is listed first but "STOP" occurs first in the text: the text ends before STOP.
    stream = TextStream(tok, stop=["END", "STOP", "x"])
    out = _run(stream, _ids(tok, "hello wor", "ld STOP the ", "END of line"))
    assert stream.stopped
    assert stream.text == "hello world "
    assert "".join(out) == "hello world "


def test_held_back_prefix_is_released_when_it_is_not_a_stop_string(tok: Tokenizer) -> None:
    stream = TextStream(tok, stop=["STOP"])
    first = stream.push(_ids(tok, "hello STO")[0])
    assert first == "hello "  # the last len("STOP") - 1 characters wait
    second = stream.push(_ids(tok, "RY of the end")[0])
    assert not stream.stopped
    assert "STO" in first + second  # released: "STOR" is no stop string
    rest = stream.finish()
    assert first + second + rest == "hello STORY of the end" == stream.text


def test_nothing_is_emitted_after_the_stop(tok: Tokenizer) -> None:
    stream = TextStream(tok, stop=["STOP"])
    before = stream.push(_ids(tok, "hello STOP")[0])
    assert stream.stopped and before == "hello "
    ids_before = list(stream.ids)
    assert stream.push(_ids(tok, " the end")[0]) == ""
    assert stream.push(_ids(tok, "def foo")[0]) == ""
    assert stream.finish() == ""
    assert stream.ids == ids_before  # ids after the stop are not even kept
    assert stream.text == "hello "


def test_concatenation_equals_final_text_token_by_token(tok: Tokenizer) -> None:
    """One id per push (the worst case for holding back): the pieces still add up to the text."""
    text = "def foo(x):\n    return x + 1\nhello world STOP the end"
    for stop in ([], ["STOP"], ["world", "STOP"], ["d S"], ["never there"]):
        stream = TextStream(tok, stop=stop)
        out = _run(stream, [[i] for i in tok.encode(text).ids])
        expected = text[: min((text.find(s) for s in stop if s in text), default=len(text))]
        assert "".join(out) == stream.text == expected, stop
        assert all(s not in piece for piece in out for s in stop)


def test_empty_stop_strings_are_ignored(tok: Tokenizer) -> None:
    stream = TextStream(tok, stop=["", "STOP"])
    out = _run(stream, _ids(tok, "hello", " world"))
    assert "".join(out) == "hello world"
    assert not stream.stopped


def test_incomplete_utf8_with_the_real_decoder_is_held_back(tok: Tokenizer) -> None:
    euro = list(tok.encode("€").ids)  # three bytes, three byte-level tokens here
    assert len(euro) == 3
    stream = TextStream(tok)
    assert stream.push(_ids(tok, "hello ")[0]) == "hello "
    assert stream.push(euro[:1]) == ""
    assert stream.push(euro[1:2]) == ""
    assert stream.push(euro[2:]) == "€"
    assert stream.finish() == ""
    assert REPLACEMENT not in stream.text


class PartialUtf8Tokenizer:
    """Decodes ids as UTF-8 bytes (id = byte value), with U+FFFD for an unfinished sequence."""

    def decode(self, ids: Sequence[int], **_: Any) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_incomplete_multibyte_character_is_held_back_until_complete() -> None:
    smile = list("😀".encode())  # four bytes
    stream = TextStream(PartialUtf8Tokenizer())
    assert stream.push(list(b"ok ")) == "ok "
    assert stream.push(smile[:1]) == ""
    assert stream.push(smile[1:3]) == ""
    assert stream.push(smile[3:] + list(b"!")) == "😀!"
    assert stream.finish() == ""
    assert stream.text == "ok 😀!"


def test_incomplete_character_and_stop_prefix_are_held_together() -> None:
    stream = TextStream(PartialUtf8Tokenizer(), stop=["é!"])
    e_acute = list("é".encode())
    assert stream.push(list(b"ab")) == "a"  # len("é!") - 1 characters wait
    assert stream.push(e_acute[:1]) == "b"  # the lone lead byte decodes to U+FFFD and waits
    assert stream.push(e_acute[1:]) == ""  # "é" may start the stop string
    assert stream.push(list(b"!")) == ""
    assert stream.stopped and stream.text == "ab"


def test_finish_releases_an_unfinished_character_as_decoded() -> None:
    """At the end nothing will complete it: the decoder's U+FFFD is emitted, so text == emitted."""
    stream = TextStream(PartialUtf8Tokenizer())
    out = _run(stream, [list(b"x"), list("€".encode())[:2]])
    assert out == ["x", "", REPLACEMENT]
    assert "".join(out) == stream.text
