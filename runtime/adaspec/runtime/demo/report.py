"""What `adaspec demo` records and shows: the live view, the summary table and the acceptance plot.

Acceptance comes from the control plane's own metric samples (its per-scrape counter deltas of each
runtime, labelled with the role and revision served), so the view shows what the policies decided on.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from adaspec.runtime import specmetrics

MARKS = {"drift": "orange", "adapt": "purple", "start_canary": "blue", "promote": "green", "reject": "red"}
MARKS.update({"adaptation_failed": "red", "rollback": "red"})


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Timeline:
    """Requests sent, the control plane's samples and decisions, its latest view of the speculator."""

    started: float
    requests: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    speculator: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_request(self, t: float, seconds: float, lang: str, role: str, tokens: int) -> None:
        with self._lock:
            self.requests.append({"t": t, "seconds": seconds, "lang": lang, "role": role, "tokens": tokens})

    def shift_time(self) -> float | None:
        """When the first request of the second language was sent."""
        langs = [r["lang"] for r in self.requests]
        return next((r["t"] for r in self.requests if r["lang"] != langs[0]), None) if langs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "requests": self.requests,
            "samples": self.samples,
            "decisions": self.decisions,
            "speculator": self.speculator,
        }


def acceptance(
    samples: list[dict[str, Any]], lo: float, hi: float
) -> dict[tuple[str, str], dict[str, float]]:
    """Per (role, revision): draft tokens, accepted tokens, acceptance in samples taken in [lo, hi)."""
    sums: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: {"draft": 0.0, "accepted": 0.0})
    for s in samples:
        if lo <= _ts(s["ts"]) < hi and s["draftTokens"]:
            key = (str(s["role"]), str(s["revision"]))
            sums[key]["draft"] += s["draftTokens"]
            sums[key]["accepted"] += s["acceptedTokens"]
    for v in sums.values():
        v["acceptance"] = specmetrics.acceptance_rate(v["accepted"], v["draft"]) or 0.0
    return dict(sums)


def _tokens_per_second(requests: list[dict[str, Any]], role: str, lo: float, hi: float) -> float | None:
    got = [r for r in requests if r["role"] == role and lo <= r["t"] < hi]
    seconds = sum(r["seconds"] for r in got)
    return sum(r["tokens"] for r in got) / seconds if seconds > 0 else None


def segments(tl: Timeline, now: float) -> list[tuple[str, float, float]]:
    """The demo's phases: the first language, the shift until the verdict, after it."""
    langs = list(dict.fromkeys(r["lang"] for r in tl.requests)) or ["python"]
    shift = tl.shift_time() or now
    verdict = next((d for d in tl.decisions if d["kind"] in ("promote", "reject", "rollback")), None)
    out = [(langs[0], tl.started, shift)]
    if len(langs) > 1 and verdict is None:
        out.append((langs[1], shift, now))
    elif len(langs) > 1 and verdict is not None:
        at, kind = _ts(verdict["at"]), verdict["kind"]
        out += [(f"{langs[1]}, before {kind}", shift, at), (f"{langs[1]}, after {kind}", at, now)]
    return out


def _table(tl: Timeline, rows: list[tuple[str, float, float]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("traffic", "role", "revision", "draft tokens", "acceptance", "client tok/s"):
        table.add_column(
            col, justify="right" if col in ("draft tokens", "acceptance", "client tok/s") else "left"
        )
    for name, lo, hi in rows:
        for (role, rev), v in sorted(acceptance(tl.samples, lo, hi).items()):
            tps = _tokens_per_second(tl.requests, role, lo, hi)
            tps_text = f"{tps:.1f}" if tps is not None else "-"
            table.add_row(name, role, rev, f"{v['draft']:.0f}", f"{v['acceptance']:.3f}", tps_text)
    return table


def render_live(tl: Timeline, traffic: Any) -> Any:
    """The live view: where the speculator stands, acceptance in the last 30 s and per phase."""
    import time

    from rich.console import Group
    from rich.text import Text

    now = time.time()
    sp = tl.speculator
    by_lang: dict[str, int] = defaultdict(int)
    for r in list(tl.requests):
        by_lang[r["lang"]] += 1
    sent = ", ".join(f"{n} {lang}" for lang, n in by_lang.items()) or "none yet"
    head = Text.assemble(
        (f"{now - tl.started:6.0f} s  ", "dim"),
        ("requests ", "bold"),
        f"{sent}   ",
        ("speculator ", "bold"),
        f"phase={sp.get('phase', '?')} stable={sp.get('stableRevision', '?')} "
        f"canary={sp.get('canaryRevision')}",
    )
    recent = _table(tl, [("last 30 s", now - 30, now)], "acceptance per runtime and revision")
    return Group(head, recent, _table(tl, segments(tl, now), "per phase"))


def render_summary(tl: Timeline) -> Any:
    """The closing table: acceptance and client-side tokens/s per phase, role and revision."""
    import time

    return _table(tl, segments(tl, time.time()), "adaspec demo: summary")


def save_plot(tl: Timeline, path: Path, bins: int = 40) -> Path:
    """Plot acceptance over time per (role, revision) in about `bins` time bins, decisions as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.8))
    span = max((_ts(s["ts"]) - tl.started for s in tl.samples), default=60.0)
    bin_s = max(5.0, round(span / bins / 5) * 5)
    series: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for s in tl.samples:
        if s["draftTokens"]:
            series[(s["role"], s["revision"])].append(
                (_ts(s["ts"]) - tl.started, s["draftTokens"], s["acceptedTokens"])
            )
    for (role, rev), points in sorted(series.items()):
        sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for t, draft, accepted in points:
            sums[int(t // bin_s)][0] += draft
            sums[int(t // bin_s)][1] += accepted
        xs = sorted(sums)
        ax.plot(
            [(b + 0.5) * bin_s for b in xs],
            [sums[b][1] / sums[b][0] for b in xs],
            marker="o",
            ms=3,
            label=f"{role}: {rev}",
        )
    shift = tl.shift_time()
    if shift is not None:
        ax.axvspan(shift - tl.started, ax.get_xlim()[1], color="grey", alpha=0.08, label="after the shift")
    last_x, level = -1e9, 0
    for d in tl.decisions:
        if d["kind"] in MARKS:
            x = _ts(d["at"]) - tl.started
            level = level + 1 if x - last_x < span / 30 else 0  # marks close in time: labels side by side
            last_x = x
            ax.axvline(x, color=MARKS[d["kind"]], ls="--", lw=1)
            ax.text(
                x + level * span / 60,
                1.03,
                d["kind"],
                rotation=90,
                va="top",
                ha="left",
                fontsize=8,
                color=MARKS[d["kind"]],
            )
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel(f"acceptance rate ({bin_s:.0f} s bins)")
    ax.set_ylim(0, 1.05)
    ax.set_title("adaspec demo: acceptance per runtime and revision, decisions marked")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
