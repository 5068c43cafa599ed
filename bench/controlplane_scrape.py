"""Benchmark: speculators scraped and evaluated per second by one control-plane instance, and its memory.

Simulated endpoints: one separate process serves every pod's `/metrics` page (the runtime's exposition
format with the contract's names, counters growing each request) over HTTP/1.1 keep-alive, so the
figures measure the control plane (HTTP client, parsing, deltas, store writes, policies), not the fake
pods. Each size runs in a fresh process so its peak RSS is its own.

    .venv/bin/python bench/controlplane_scrape.py --sizes 100 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

PAGE = (
    "# TYPE adaspec_spec_decode_num_drafts_total counter\n"
    'adaspec_spec_decode_num_drafts_total{{speculator="adaptive"}} {d}\n'
    'adaspec_spec_decode_num_draft_tokens_total{{speculator="adaptive"}} {t}\n'
    'adaspec_spec_decode_num_accepted_tokens_total{{speculator="adaptive"}} {a}\n'
    + "".join(
        "adaspec_spec_decode_num_accepted_tokens_per_pos_total"
        + f'{{{{speculator="adaptive",position="{i}"}}}} {{p{i}}}\n'
        for i in range(4)
    )
    + "adaspec_generation_tokens_total {g}\nadaspec_target_forward_passes_total {d}\n"
    'adaspec_revision_info{{revision="r0",role="stable"}} 1\n'
)


def serve(port_q: mp.Queue) -> None:  # type: ignore[type-arg]
    """Answer GET /pod/<i>/metrics with a page whose counters grow by one step per request."""
    hits: dict[bytes, int] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                n = hits[path] = hits.get(path, 0) + 1
                d = 1000 * n
                body = PAGE.format(
                    d=d, t=4 * d, a=2.8 * d, g=3.8 * d, p0=0.9 * d, p1=0.8 * d, p2=0.6 * d, p3=0.5 * d
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=2048)
        port_q.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def run_one(size: int, rounds: int, db: str | None) -> dict[str, float]:
    from adaspec.controlplane.actuators import NullActuator
    from adaspec.controlplane.config import Settings
    from adaspec.controlplane.wiring import build, open_store

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=serve, args=(q,), daemon=True)
    server.start()
    port = q.get(timeout=30)
    tmp = tempfile.mkdtemp(prefix="cp-bench-")
    url = db or f"sqlite:///{tmp}/bench.db"
    st = Settings.model_validate(
        {
            "db_url": url,
            "actuator": "none",
            "scrape_concurrency": 64,
            "speculators": [
                {"name": f"s{i}", "endpoints": [{"url": f"http://127.0.0.1:{port}/pod/{i}/metrics"}]}
                for i in range(size)
            ],
        }
    )
    store = open_store(url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cp = build(st, store, actuator=NullActuator(), clock=lambda: t0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cp.scrape(t0)  # base lines
    scrape_s = evaluate_s = 0.0
    for r in range(1, rounds + 1):
        now = t0 + timedelta(minutes=r)
        a = time.perf_counter()
        read = cp.scrape(now)
        b = time.perf_counter()
        cp.evaluate(now)
        c = time.perf_counter()
        if read != size:
            raise RuntimeError(f"round {r}: read {read} of {size} pods")
        scrape_s += b - a
        evaluate_s += c - b
    server.terminate()
    store.close()
    return {
        "speculators": size,
        "rounds": rounds,
        "scrape_per_s": size * rounds / scrape_s,
        "evaluate_per_s": size * rounds / evaluate_s,
        "scrape_and_evaluate_per_s": size * rounds / (scrape_s + evaluate_s),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_at_start_mib": rss_before / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file per size)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.rounds, args.db)))
        return 0
    print(f"{'speculators':>11} {'scrape/s':>10} {'evaluate/s':>11} {'both/s':>8} {'peak RSS MiB':>13}")
    for size in args.sizes:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--one",
            str(size),
            "--rounds",
            str(args.rounds),
        ]
        if args.db:
            cmd += ["--db", args.db]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['speculators']:>11} {r['scrape_per_s']:>10.0f} {r['evaluate_per_s']:>11.0f} "
            f"{r['scrape_and_evaluate_per_s']:>8.0f} {r['peak_rss_mib']:>13.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
