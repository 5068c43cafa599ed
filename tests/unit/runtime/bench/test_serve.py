"""The pure parts of `adaspec bench serve`: percentiles, per-token ITL, rows, the table and the goal line."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from adaspec.cli.main import build_parser, main
from adaspec.runtime.bench import serve
from adaspec.runtime.bench.serve import Row
from adaspec.runtime.bench.servepaths import Trace
from adaspec.runtime.bench.servesetup import ServeBenchConfig, report_md


def trace(
    index: int, sent: float, arrivals: Sequence[tuple[float, int]], first: float | None = None
) -> Trace:
    ids = tuple(range(sum(n for _, n in arrivals)))
    first_text = first if first is not None else (arrivals[0][0] if arrivals else None)
    return Trace(index, sent, first_text, tuple(arrivals), len(ids), ids)


def row(path: str, c: int, tps: float, errors: int = 0) -> Row:
    return Row(path, c, 4, errors, int(tps), 1.0, tps, 10.0, 20.0, 1.0, 2.0)


def test_percentile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert serve.percentile(values, 0) == 1.0
    assert serve.percentile(values, 100) == 4.0
    assert serve.percentile(values, 50) == pytest.approx(2.5)
    assert serve.percentile(values, 99) == pytest.approx(3.97)  # numpy.percentile(values, 99)
    assert serve.percentile([7.0], 99) == 7.0
    assert serve.percentile([], 50) is None


def test_percentile_names_a_bad_q() -> None:
    with pytest.raises(ValueError, match="got 101"):
        serve.percentile([1.0], 101)


def test_itl_is_per_token_and_skips_the_first_delta() -> None:
    # deltas at 1.0 (3 tokens: the first token's time), 1.2 (2 tokens), 1.5 (1 token)
    t = trace(0, 0.5, [(1.0, 3), (1.2, 2), (1.5, 1)])
    assert serve.itl_samples(t) == pytest.approx([0.1, 0.1, 0.3])
    assert serve.itl_samples(trace(0, 0.0, [(1.0, 1)])) == []


def test_row_figures_from_traces() -> None:
    traces = [
        trace(0, 0.0, [(0.010, 1), (0.012, 1)]),
        trace(1, 0.0, [(0.030, 2), (0.034, 2)], first=0.020),  # text arrived before the tokens' delta
        Trace(2, 0.0, None, (), 0, (), "APIConnectionError: refused"),
    ]
    r = serve.summarize_row("http", 4, traces, wall_s=0.5)
    assert (r.requests, r.errors, r.tokens) == (3, 1, 6)
    assert r.tokens_per_s == pytest.approx(12.0)
    assert r.ttft_p50_ms == pytest.approx(15.0)  # 10 ms and 20 ms
    assert r.itl_p50_ms == pytest.approx(2.0)  # samples 2, 2, 2 ms
    assert r.e2e_mean_ms == pytest.approx(23.0)  # last tokens at 12 ms and 34 ms
    assert r.busy_share == pytest.approx(0.046 / (0.5 * 4))
    assert r.first_error == "APIConnectionError: refused"


def test_ratio_and_goal_met_and_not_met() -> None:
    rows = [row("engine", 1, 100.0), row("http", 1, 96.0), row("engine", 4, 100.0), row("http", 4, 80.0)]
    assert serve.ratios(rows) == {1: pytest.approx(0.96), 4: pytest.approx(0.8)}
    verdict = serve.goal(rows)
    assert verdict["met"] is True
    assert serve.goal_line(verdict).endswith(": met (96.0%)")
    slow = [row("engine", 1, 100.0), row("http", 1, 94.0)]
    assert serve.goal_line(serve.goal(slow)).endswith(": not met (94.0%)")


def test_goal_not_met_with_errors_or_without_a_concurrency_1_row() -> None:
    failing = [row("engine", 1, 100.0), row("http", 1, 99.0, errors=1)]
    assert serve.goal(failing)["met"] is False
    assert "not met (99.0%, with failed requests)" in serve.goal_line(serve.goal(failing))
    assert "not measured" in serve.goal_line(serve.goal([row("engine", 4, 1.0), row("http", 4, 1.0)]))
    assert serve.ratios([row("engine", 1, 0.0), row("http", 1, 5.0)]) == {1: None}


def test_table_has_one_line_per_row_and_the_ratio_on_http_lines() -> None:
    rows = [row("engine", 1, 100.0), row("http", 1, 96.0)]
    lines = serve.format_table(rows).splitlines()
    assert lines[0].split() == [
        "path", "conc", "reqs", "tok/s", "TTFT", "p50", "TTFT", "p99",
        "ITL", "p50", "ITL", "p99", "http/engine", "errors",
    ]  # fmt: skip
    assert lines[2].split() == ["engine", "1", "4", "100.0", "10.0", "20.0", "1.0", "2.0", "-", "0"]
    assert lines[3].split() == ["http", "1", "4", "96.0", "10.0", "20.0", "1.0", "2.0", "0.960", "0"]
    assert len(lines) == 5  # header, rule, two rows, the units line
    empty = Row("http", 16, 0, 0, 0, 0.0, 0.0, None, None, None, None)
    assert serve.format_table([empty]).splitlines()[2].split()[4:8] == ["-", "-", "-", "-"]


def test_outputs_compared_per_prompt_and_concurrency() -> None:
    a, b = trace(0, 0.0, [(1.0, 2)]), trace(1, 0.0, [(1.0, 3)])
    other = Trace(1, 0.0, 1.0, ((1.0, 3),), 3, (9, 9, 9))
    got = serve.compare_outputs({("engine", 1): [a, b], ("http", 1): [a, other], ("http", 4): [a]})
    assert got == {"compared": 2, "same": 1}  # concurrency 4 has no engine row to compare with


class FakePath:
    """Records which thread sent which prompt, and answers at once."""

    name = "fake"

    def __init__(self) -> None:
        self.sent: dict[str, list[int]] = {}
        self.lock = threading.Lock()

    def request(self, index: int, prompt_ids: Sequence[int], max_tokens: int) -> Trace:
        with self.lock:
            self.sent.setdefault(threading.current_thread().name, []).append(index)
        return trace(index, 0.0, [(0.1, max_tokens)])

    def pids(self) -> tuple[int, ...]:
        return ()

    def close(self) -> int:
        return 0


def test_run_row_gives_each_client_its_share_in_turn() -> None:
    path, ticks = FakePath(), []
    traces, wall = serve.run_row(path, 3, [(1,)] * 7, 4, lambda: ticks.append(1))
    assert [t.index for t in traces] == list(range(7))
    assert sorted(sorted(v) for v in path.sent.values()) == [[0, 3, 6], [1, 4], [2, 5]]
    assert len(ticks) == 7 and wall > 0


@pytest.mark.parametrize("text", ["1,0", "1,x", "", "4,-2"])
def test_bad_concurrency_is_named(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "serve", "--concurrency", text]) == 2
    assert "--concurrency takes positive integers" in capsys.readouterr().err


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["bench", "serve"])
    assert (args.strategy, args.prompts, args.max_tokens, args.concurrency) == ("hybrid", 16, 32, "1,4,16")
    assert args.pretrained is None and args.out is None and args.json is False
    assert serve.parse_concurrency("1,4,4,16") == (1, 4, 16)


def test_report_md_carries_table_goal_and_notes(tmp_path: Path) -> None:
    rows = [row("engine", 1, 100.0), row("http", 1, 96.0)]
    config = ServeBenchConfig("hybrid", 4, 32, (1,), out=tmp_path)
    results = {
        "setup": {
            "command": config.command,
            "strategy": "hybrid",
            "prompts": 4,
            "max_tokens": 32,
            "concurrency": [1],
            "target": "t",
            "wall_seconds": 1.0,
        },
        "table": serve.format_table(rows),
        "goal_line": serve.goal_line(serve.goal(rows)),
        "outputs": {"same": 4, "compared": 4},
        "notes": ["both paths see the prompts in the same order"],
    }
    text = report_md(results)
    assert serve.format_table(rows) in text
    assert "met (96.0%)" in text and "- both paths see the prompts in the same order" in text
