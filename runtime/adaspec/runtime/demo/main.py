"""`adaspec demo`: `adaspec up` as a real process, a client sending code completions through its OpenAI
endpoint (Python, then a language shift), and a live view of what the control plane sees and decides.

The fleet's settings are `adaspec.runtime.demo.settings.demo_settings` (the up integration tests run
the same). Everything else is `up` as a user runs it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from adaspec.cli.errors import CommandError
from adaspec.runtime.demo.report import Timeline, render_summary, save_plot
from adaspec.runtime.demo.settings import demo_settings
from adaspec.runtime.server.probe import wait_healthy
from adaspec.runtime.up.processes import free_port
from adaspec.runtime.workloads import Prompt

# decisions the view lists (the rest, such as "none", are the policies' bookkeeping)
SHOWN = frozenset(
    ["drift", "recovered", "adapt", "adaptation_failed", "start_canary", "canary_check", "promote"]
    + ["reject", "rollback", "guard_passed", "pause"]
)
FINAL = ("promote", "reject", "adaptation_failed", "rollback", "pause")


@dataclass
class Models:
    """What the fleet serves and the prompts it is sent, per phase in order."""

    target: Path
    draft: Path
    phases: list[tuple[str, list[Prompt]]]
    notes: list[str] = field(default_factory=list)


def _fixture_models(args: argparse.Namespace, count: int) -> Models:
    from adaspec.runtime.fixtures import build_fixtures
    from adaspec.runtime.microbench import cut_prompts
    from adaspec.runtime.models import load_tokenizer

    if args.shift_to != "go":
        raise CommandError("--fixtures: the fixture target knows python and go only (--shift-to go)")
    home = build_fixtures()
    tok = load_tokenizer(home / "target")
    python = cut_prompts(tok, "python", args.python_requests, length=48, seed=args.seed)
    go = cut_prompts(tok, "go", min(count, 100), length=48, seed=args.seed)
    return Models(home / "target", home / "draft", [("python", python), ("go", go)])


def _pretrained_models(args: argparse.Namespace, count: int) -> Models:
    from adaspec.runtime.bench.commands import resolve_target
    from adaspec.runtime.models import load_tokenizer
    from adaspec.runtime.train_draft import default_static_draft, draft_report
    from adaspec.runtime.workloads import WorkloadError, cut_prompts, default_corpora, list_corpus

    target = resolve_target(args.target)
    corpora = {c.lang: c for c in default_corpora()}
    if "python" not in corpora or args.shift_to not in corpora:
        raise CommandError(
            f"need python and {args.shift_to} sources on this machine; found {sorted(corpora)}"
        )
    notes = []
    if args.static_draft:
        draft = Path(args.static_draft).expanduser()
        manifest_path = draft / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    else:
        draft, manifest, built = default_static_draft(
            target, corpora["python"], args.draft_budget_minutes, args.seed
        )
        if built:
            notes.append(f"the static draft was trained first ({draft_report(manifest)['seconds']:.0f} s)")
    tok = load_tokenizer(target)

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False).input_ids)

    exclude = set(draft_report(manifest).get("training_files", []))
    try:
        python, _ = cut_prompts(
            list_corpus(corpora["python"]),
            encode,
            args.python_requests,
            seed=args.seed,
            exclude=exclude,
            heldout_only=True,
        )
        shifted = codebase_prompts(
            list_corpus(corpora[args.shift_to]), encode, args.shift_files, 150, args.seed
        )
    except WorkloadError as exc:
        raise CommandError(str(exc)) from exc
    notes.append(f"{args.shift_to} traffic: {len(shifted)} prompts from {args.shift_files} files")
    return Models(target, draft, [("python", python), (args.shift_to, shifted)], notes)


def codebase_prompts(corpus: Any, encode: Any, files: int, count: int, seed: int) -> list[Prompt]:
    """`count` prompts cut at different places of `files` held-out files of `corpus`, interleaved: the
    traffic of a team that moved to a codebase in another language (what it asks next resembles what it
    asked before, as served traffic does, which is what adapting to it can win)."""
    from dataclasses import replace

    from adaspec.runtime.workloads import cut_prompts

    picked, _ = cut_prompts(corpus, encode, files, seed=seed, heldout_only=True)
    subset = replace(corpus, files=tuple(p.file_id for p in picked))
    rounds = [
        cut_prompts(subset, encode, len(picked), seed=seed + 1 + r)[0] for r in range(-(-count // files))
    ]
    out = [p for batch in rounds for p in batch]
    return out[:count]


class Fleet:
    """One `adaspec up` process and its control plane's API."""

    def __init__(self, workdir: Path, settings: dict[str, Any]) -> None:
        self.workdir = workdir
        self.state = workdir / "state"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "up.yaml").write_text(yaml.safe_dump(settings, sort_keys=True))
        self.log = workdir / "up.log"
        cmd = [sys.executable, "-m", "adaspec.cli.main", "up", f"--config={workdir / 'up.yaml'}"]
        cmd += [f"--state-dir={self.state}", f"--port={self.port}"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, timeout_s: float) -> None:
        wait_healthy(self.url, self.proc, self.log, "adaspec up", timeout_s, interval_s=1.0)
        from adaspec.controlplane.actuators import read_token  # the token file's one reader

        self.http.headers["Authorization"] = f"Bearer {read_token(self.state / 'admin-token')}"

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Traffic(threading.Thread):
    """Sends the phases' prompts one after the other through the front endpoint (the `openai` client)."""

    def __init__(
        self, base_url: str, models: Models, max_tokens: int, limit: int, timeline: Timeline, pause_s: float
    ) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=2, timeout=300)
        self.models, self.max_tokens, self.limit, self.timeline = models, max_tokens, limit, timeline
        self.pause_s = pause_s  # between requests while an adaptation run is in flight
        self.stop_after: int | None = None  # set by the view: requests still to send
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            model = self.client.models.list().data[0].id
            for lang, prompt in self._sequence():
                if self.done.is_set() or len(self.timeline.requests) >= self.limit:
                    break
                if self.stop_after is not None:
                    if self.stop_after <= 0:
                        break
                    self.stop_after -= 1
                if self.timeline.speculator.get("phase") == "adapting":
                    self.done.wait(self.pause_s)
                t0 = time.time()
                raw = self.client.completions.with_raw_response.create(
                    model=model, prompt=list(prompt.token_ids), max_tokens=self.max_tokens, temperature=0
                )
                out = raw.parse()
                role = raw.headers.get("x-adaspec-role", "?")
                tokens = out.usage.completion_tokens if out.usage is not None else 0
                self.timeline.add_request(t0, time.time() - t0, lang, role, tokens)
        except BaseException as exc:  # noqa: BLE001 - reported by the view, which ends the demo
            self.error = exc
        finally:
            self.done.set()

    def _sequence(self) -> Iterator[tuple[str, Prompt]]:
        """The first language's prompts, then more of them until the drift detector has its reference
        (drift is a drop from the first language's level: on a fast machine the first prompts can be
        sent between two evaluations, and a reference made of both languages would hide the drop), then
        the shifted traffic, repeated until the verdict (the view sets stop_after) or the cap."""
        (first, python), (shift, later) = self.models.phases
        yield from ((first, p) for p in python)
        for p in itertools.cycle(python):
            if (self.timeline.speculator.get("drift") or {}).get("reference") is not None:
                break
            yield first, p
        yield from ((shift, p) for p in itertools.cycle(later))


def run_demo(args: argparse.Namespace) -> int:
    """Set up, run the fleet under traffic with the live view, print the summary, save the plot."""
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=120)  # a log file gets whole rows
    limit = args.max_requests
    # no spinner here: a first run converts the model and trains the draft under their own progress bars
    console.print("preparing the models and prompts (a first run converts and trains them; cached after)")
    models = _fixture_models(args, limit) if args.fixtures else _pretrained_models(args, limit)
    for note in models.notes:
        console.print(f"[dim]{note}[/dim]")
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = demo_settings(models.target, models.draft, args.fixtures)
    fleet = Fleet(out, settings)
    timeline = Timeline(started=time.time())
    code = 1
    try:
        with console.status("starting adaspec up: stable and canary runtimes, control plane"):
            fleet.wait_ready(timeout_s=900)
        console.print(f"adaspec up ready at {fleet.url} (state {fleet.state}, log {fleet.log})")
        if args.adapting_pause > 0:
            console.print(
                f"[dim]while an adaptation run is in flight the demo waits {args.adapting_pause:.0f} s "
                "between "
                "requests: on this machine the run shares the CPU with the serving runtimes (in a cluster it "
                "is a Job on its own GPU)[/dim]"
            )
        traffic = Traffic(fleet.url + "/v1", models, args.max_tokens, limit, timeline, args.adapting_pause)
        timeline.started = time.time()  # the view's and the plot's clock: seconds since the first request
        traffic.start()
        code = watch(console, fleet, traffic, timeline, args)
    finally:
        stopped = fleet.stop()
    if stopped != 0:
        console.print(f"[red]adaspec up exited with {stopped}[/red]; its log: {fleet.log}")
        code = code or 1
    report = {"settings": settings, "args": {k: str(v) for k, v in vars(args).items() if k != "func"}}
    report.update(timeline.to_json())
    (out / "demo.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    console.print()
    console.print(render_summary(timeline))
    plot = save_plot(timeline, out / "acceptance.png")
    console.print(f"plot: {plot}; records: {out / 'demo.json'}")
    return code


def watch(console: Any, fleet: Fleet, traffic: Traffic, timeline: Timeline, args: argparse.Namespace) -> int:
    """Poll the control plane every two seconds and redraw the live view until the traffic ends."""
    from rich.live import Live

    from adaspec.runtime.demo.report import render_live

    seen = 0
    deadline = time.monotonic() + args.time_limit
    with Live(render_live(timeline, traffic), console=console, refresh_per_second=2) as live:
        while not traffic.done.is_set():
            time.sleep(2.0)
            timeline.speculator = fleet.get("/api/v1/speculators")["items"][0]
            since = {"since": timeline.samples[-1]["ts"]} if timeline.samples else {}  # only the new ones
            timeline.samples += fleet.get("/api/v1/speculators/default/metrics", limit=5000, **since)["items"]
            decisions = fleet.get("/api/v1/decisions", limit=5000)["items"]
            for d in decisions[seen:]:
                if d["kind"] in SHOWN:
                    timeline.decisions.append(d)
                    live.console.print(describe(d, timeline.started))
                if d["kind"] in FINAL and traffic.stop_after is None:
                    traffic.stop_after = args.after_requests
            seen = len(decisions)
            live.update(render_live(timeline, traffic))
            if time.monotonic() > deadline:
                live.console.print(f"[yellow]time limit ({args.time_limit} s) reached[/yellow]")
                traffic.done.set()
    traffic.join(timeout=330)
    if traffic.error is not None:
        raise CommandError(f"traffic failed: {traffic.error!r} (log {fleet.log})") from traffic.error
    return 0 if any(d["kind"] in FINAL for d in timeline.decisions) else 1


def describe(d: dict[str, Any], started: float) -> str:
    """One line of the event log: time since start, decision, its reason and main inputs."""
    from datetime import datetime

    at = datetime.fromisoformat(d["at"].replace("Z", "+00:00")).timestamp() - started
    keys = ("value", "reference", "statistic", "acceptance_delta", "result", "run_id", "revision", "to")
    inputs = ", ".join(f"{k}={_short(d['inputs'][k])}" for k in keys if d["inputs"].get(k) is not None)
    colour = {"drift": "yellow", "promote": "green", "reject": "red", "adaptation_failed": "red"}
    c = colour.get(d["kind"], "cyan")
    return f"[dim]{at:6.0f} s[/dim] [{c}]{d['kind']:<17}[/{c}] {d['reason'][:160]} [dim]{inputs}[/dim]"


def _short(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
