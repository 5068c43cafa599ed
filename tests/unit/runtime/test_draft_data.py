"""train-draft's data: the training split only, seeded token streams, epochs that fill any step count."""

from __future__ import annotations

from pathlib import Path

from adaspec.runtime.draft_data import batches, epochs, token_stream, training_files
from adaspec.runtime.workloads import CorpusSpec, is_heldout, list_corpus


def corpus_dir(tmp_path: Path, files: int = 20) -> Path:
    for i in range(files):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n" * 5)
    return tmp_path


def encode(text: str) -> list[int]:
    return [len(w) % 60 for w in text.split()]


def test_training_never_reads_held_out_files(tmp_path: Path) -> None:
    corpus = list_corpus(CorpusSpec("python", corpus_dir(tmp_path, 40)))
    files = training_files(corpus)
    assert files and not any(is_heldout(f) for f in files)
    used: list[str] = []
    stream = token_stream(corpus, files, encode, eos=63, seed=0, used=used)
    windows = list(batches(stream, batch_size=2, seq_len=8))
    assert all(w.shape == (2, 8) for w in windows)
    assert set(used) <= set(files) and len(used) == len(files)


def test_epochs_repeat_a_small_corpus_in_a_new_order(tmp_path: Path) -> None:
    corpus = list_corpus(CorpusSpec("python", corpus_dir(tmp_path, 40)))
    files = training_files(corpus)
    used: list[str] = []
    one_epoch = sum(1 for _ in token_stream(corpus, files, encode, 63, 0, []))
    stream = epochs(corpus, files, encode, eos=63, seed=0, used=used)
    windows = [w for _, w in zip(range(3 * one_epoch // 16), batches(stream, 2, 8), strict=False)]
    assert len(windows) == 3 * one_epoch // 16  # more windows than one pass over the files holds
    assert len(used) >= 3 * len(files) - 1 and set(used) == set(files)
    assert used[: len(files)] != used[len(files) : 2 * len(files)]  # each epoch reshuffled
    assert list(epochs(corpus, [], encode, 63, 0, [])) == []  # nothing to read: the stream ends
