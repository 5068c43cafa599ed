"""Traffic capture in a running serve: every sampled request lands in a shard, readable while serving."""

from __future__ import annotations

import time
from pathlib import Path

from adaspec.runtime.capture import read_records
from adaspec.runtime.workloads import Prompt

from .serving import start_serve


def test_served_requests_are_captured_as_served(
    fixture_dir: Path, tmp_path: Path, prompts: list[Prompt]
) -> None:
    config = tmp_path / "controller.yaml"
    config.write_text("capture: {enabled: true, sampleRate: 1.0, retention: 1h, maxBytes: 1048576}\n")
    capture = tmp_path / "capture"
    s = start_serve(
        tmp_path / "serve",
        f"--target-model={fixture_dir / 'target'}",
        f"--static-draft={fixture_dir / 'draft'}",
        f"--controller-config={config}",
        f"--capture-dir={capture}",
    )
    try:
        sent = []
        for p in prompts[40:44]:
            out = s.openai().completions.create(
                model="target",
                prompt=list(p.token_ids),
                max_tokens=12,
                temperature=0,
                extra_body={"return_token_ids": True, "speculation_stats": True, "workload_tag": "go"},
            )
            sent.append((list(p.token_ids), out))
        deadline = time.monotonic() + 20
        records = []
        while len(records) < len(sent) and time.monotonic() < deadline:
            records = list(read_records(capture))  # read while the server keeps the shard open
            time.sleep(0.2)
        assert len(records) == len(sent)
        for (ids, out), rec in zip(sent, records, strict=True):
            assert rec.prompt_ids == ids
            assert rec.output_ids == list(out.choices[0].model_extra["token_ids"])
            assert (rec.revision, rec.role, rec.tag, rec.finish_reason) == (
                "static",
                "stable",
                "go",
                "length",
            )
            drafted = [o for o in rec.token_origins() if o[0] is not None]
            stats = out.model_extra["speculation"]
            # a tree step credits every branch with the tokens of it the target agreed with, so where two
            # branches shared accepted tokens the proposers' sum counts them once for each
            accepted = sum(v["accepted_tokens"] for v in stats["per_speculator"].values())
            assert len(drafted) == sum(st.accepted for st in rec.steps) <= accepted
            assert sum(st.drafted for st in rec.steps) == sum(
                v["draft_tokens"] for v in stats["per_speculator"].values()
            )
    finally:
        assert s.stop() == 0
    assert len(list(read_records(capture))) == len(sent)  # nothing lost at shutdown
