"""Incremental detokenisation with stop strings: the text a stream may emit after each step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence at the end


class TextStream:
    """Decodes generated ids as they come and finds stop strings (OpenAI `stop`).

    Text that could still turn into a stop string (a stop string's prefix at the end) or an unfinished
    multi-byte character is held back until the next step decides it; the emitted text never contains
    a stop string, and the final text ends before the first one.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self._tok = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0  # characters of `text` handed out
        self.stopped = False  # a stop string was found; `text` is cut before it

    def push(self, ids: Sequence[int]) -> str:
        """Add newly generated ids; return the text now safe to emit (maybe empty)."""
        if self.stopped:
            return ""
        self.ids.extend(int(i) for i in ids)
        text = str(self._tok.decode(self.ids, skip_special_tokens=True))
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self._take(len(self.text))
        self.text = text
        end = len(text) - self._hold
        if text.endswith(REPLACEMENT):
            end = min(end, len(text.rstrip(REPLACEMENT)))
        return self._take(end)

    def finish(self) -> str:
        """Return whatever is still held back (generation ended)."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        out = self.text[self.emitted : end]
        self.emitted = end
        return out
