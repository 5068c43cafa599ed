"""Spec-decode figures and metric names: one definition for the runtime's stats, its `/metrics` and the
control plane's counters (torch-free, so the control plane imports it).

Definitions are vLLM's (`vllm:spec_decode_*`): acceptance rate = accepted / draft tokens; mean accepted
length = 1 + accepted / drafts (tokens committed per verified draft). Tokens per target pass = generated
tokens / target forward passes also counts the steps that drafted nothing (what the speed-up follows).
"""

from __future__ import annotations

# Runtime counters (docs/CONTRACTS.md, "Runtime metrics"); `speculator` label on the spec_decode ones.
DRAFTS = "adaspec_spec_decode_num_drafts_total"
DRAFT_TOKENS = "adaspec_spec_decode_num_draft_tokens_total"
ACCEPTED = "adaspec_spec_decode_num_accepted_tokens_total"
ACCEPTED_PER_POS = "adaspec_spec_decode_num_accepted_tokens_per_pos_total"
GENERATION_TOKENS = "adaspec_generation_tokens_total"
TARGET_PASSES = "adaspec_target_forward_passes_total"
REVISION_INFO = "adaspec_revision_info"


def acceptance_rate(accepted: float, draft_tokens: float) -> float | None:
    """Return accepted / draft tokens, or None when nothing was drafted."""
    return accepted / draft_tokens if draft_tokens > 0 else None


def mean_accepted_length(accepted: float, drafts: float) -> float | None:
    """Return 1 + accepted / drafts (tokens committed per verified draft), or None without drafts."""
    return 1.0 + accepted / drafts if drafts > 0 else None


def tokens_per_target_pass(generated: float, passes: float) -> float | None:
    """Return generated tokens / target forward passes (1.0 without speculation), or None without passes."""
    return generated / passes if passes > 0 else None
