"""Exposition parsing: the contract's exact names, vLLM's names, labels summed, errors name the line."""

from __future__ import annotations

import pytest

from adaspec.controlplane.counters import Counters
from adaspec.controlplane.scrape import ParseError, parse_exposition

RUNTIME = """# HELP adaspec_spec_decode_num_drafts_total Drafts proposed.
# TYPE adaspec_spec_decode_num_drafts_total counter
adaspec_spec_decode_num_drafts_total{speculator="static"} 10
adaspec_spec_decode_num_drafts_total{speculator="adaptive"} 30
adaspec_spec_decode_num_draft_tokens_total{speculator="static"} 40
adaspec_spec_decode_num_draft_tokens_total{speculator="adaptive"} 120
adaspec_spec_decode_num_accepted_tokens_total{speculator="static"} 20
adaspec_spec_decode_num_accepted_tokens_total{speculator="adaptive"} 90
adaspec_spec_decode_num_accepted_tokens_per_pos_total{speculator="adaptive",position="0"} 28
adaspec_spec_decode_num_accepted_tokens_per_pos_total{speculator="static",position="0"} 9
adaspec_spec_decode_num_accepted_tokens_per_pos_total{speculator="adaptive",position="1"} 25
adaspec_generation_tokens_total 150
adaspec_target_forward_passes_total 40
adaspec_revision_info{revision="r7",role="canary"} 1
adaspec_revision_info{revision="r6",role="stable"} 0
process_cpu_seconds_total 12.5
adaspec_spec_decode_num_drafts_created 1.7e9
"""

VLLM = """vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 100.0
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 300.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 210.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 90.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="2"} 50.0
vllm:generation_tokens_total{engine="0",model_name="m"} 400.0
"""


def test_runtime_page() -> None:
    pod = parse_exposition(RUNTIME, "runtime")
    assert pod.counters == Counters(
        drafts=40, draft_tokens=160, accepted=110, generated=150, forward_passes=40, per_position=(37, 25)
    )
    assert (pod.revision, pod.role) == ("r7", "canary")


def test_vllm_page() -> None:
    pod = parse_exposition(VLLM, "vllm")
    assert pod.counters.acceptance_rate == pytest.approx(0.7)
    assert pod.counters.mean_accepted_length == pytest.approx(3.1)
    assert pod.counters.per_position == (90, 0, 50)
    assert pod.revision is None


def test_other_source_names_are_ignored() -> None:
    assert parse_exposition(VLLM, "runtime").counters == Counters()


@pytest.mark.parametrize(
    ("page", "match"),
    [
        ("adaspec_generation_tokens_total lots\n", "line 1: bad value 'lots'"),
        (
            '# ok\nadaspec_spec_decode_num_accepted_tokens_per_pos_total{speculator="a"} 3\n',
            "line 2: .*position",
        ),
        ("adaspec_{oops\n", "line 1: not a sample"),
    ],
)
def test_bad_pages_name_the_line(page: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse_exposition(page, "runtime")
