"""train-draft's data: a corpus's training split as a token stream, repeated in epochs, cut into windows."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence

import torch

from adaspec.runtime.workloads import Corpus, WorkloadError, is_heldout


def training_files(corpus: Corpus) -> list[str]:
    """Files training may read: the non-held-out split (benchmarks prompt only from the held-out one)."""
    return [f for f in corpus.files if not is_heldout(f)]


def token_stream(
    corpus: Corpus,
    files: Sequence[str],
    encode: Callable[[str], list[int]],
    eos: int,
    seed: int,
    used: list[str],
) -> Iterator[int]:
    """Yield tokens of the files in a seeded order, separated by EOS; append each file read to `used`."""
    order = list(files)
    random.Random(seed).shuffle(order)
    for file_id in order:
        try:
            text = corpus.read(file_id)
        except WorkloadError as exc:
            if isinstance(exc.__cause__, UnicodeDecodeError):
                continue
            raise
        used.append(file_id)
        yield from encode(text)
        yield eos


def epochs(
    corpus: Corpus,
    files: Sequence[str],
    encode: Callable[[str], list[int]],
    eos: int,
    seed: int,
    used: list[str],
) -> Iterator[int]:
    """Yield `token_stream` over the files again and again (epoch e shuffled by `seed + e`), so a small
    corpus still fills the recipe's steps; stop after an epoch that yields no token."""
    for epoch in itertools.count():
        empty = True
        for tok in token_stream(corpus, files, encode, eos, seed + epoch, used):
            empty = False
            yield tok
        if empty:
            return


def batches(stream: Iterator[int], batch_size: int, seq_len: int) -> Iterator[torch.Tensor]:
    """Yield [batch, seq_len] windows cut consecutively from the stream (stops when it runs dry)."""
    need = batch_size * seq_len
    buf: list[int] = []
    for tok in stream:
        buf.append(tok)
        if len(buf) == need:
            yield torch.tensor(buf, dtype=torch.long).view(batch_size, seq_len)
            buf = []
