"""Draft revisions of a serving process: verify everything, load, swap between requests."""

from __future__ import annotations

import copy
import hmac
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from adaspec.runtime.artifacts import (
    ArtifactError,
    ArtifactMismatch,
    ArtifactNotFound,
    load_revision,
    manifest_sha256,
)
from adaspec.runtime.engine import SpeculativeEngine
from adaspec.runtime.models import CachedLM, ModelLoadError
from adaspec.runtime.proposers.adaptive import AdaptiveConfig, AdaptiveProposer
from adaspec.runtime.proposers.vocab import draft_counts
from adaspec.runtime.server.locations import LocationError, resolve
from adaspec.runtime.server.protocol import APIError
from adaspec.runtime.server.tokens import STATIC

log = logging.getLogger("adaspec.serve")

__all__ = ["STATIC", "LoadedRevision", "RevisionManager", "RevisionRecord", "refusal"]


@dataclass(frozen=True)
class RevisionRecord:
    """A revision this process served or serves."""

    revision: str
    artifact_uri: str
    sha256: str
    role: str
    action: str
    loaded_at: float


@dataclass(frozen=True)
class LoadedRevision:
    """A verified revision with its model, ready to swap in."""

    record: RevisionRecord
    model: Any  # the draft model (a fresh copy, owned by the new proposer)
    counts: Any | None = None  # its token counts [vocab] ranking a reduced draft vocabulary, if it has them


def refusal(exc: Exception) -> APIError:
    """The HTTP answer to a revision that cannot be loaded."""
    if isinstance(exc, ArtifactNotFound | LocationError):
        return APIError(404, str(exc), param="artifact_uri", kind="not_found_error")
    if isinstance(exc, ArtifactMismatch):
        return APIError(409, str(exc), param="sha256", kind="conflict_error")
    return APIError(422, str(exc), param="artifact_uri", kind="unprocessable_entity_error")


class RevisionManager:
    """Verifies and loads draft revisions into the engine's adaptive proposer."""

    def __init__(
        self,
        engine: SpeculativeEngine,
        tokenizer_sha256: str,
        static_draft: Any | None,  # kept on the CPU: the weights revision "static" goes back to
        adaptive: AdaptiveConfig,
        device: str,
        role: str,
        static_counts: Any | None = None,  # the static draft's token counts (vocab.safetensors), if any
    ) -> None:
        self.engine = engine
        self.tokenizer_sha256 = tokenizer_sha256
        self.static_draft = static_draft
        self.static_counts = static_counts
        self.adaptive = adaptive
        self.device = device
        self.role = role
        self.history: list[RevisionRecord] = []
        self.current: RevisionRecord | None = None
        self._lock = threading.Lock()  # one load at a time

    @property
    def has_adaptive(self) -> bool:
        """Whether the strategy drafts with an adaptive model a revision can replace."""
        return "adaptive" in self.engine.proposers

    def adaptive_version(self) -> int:
        """Live version of the adaptive draft's online-trained weights (0 right after a load)."""
        p = self.engine.proposers.get("adaptive")
        return p.served_version if isinstance(p, AdaptiveProposer) else 0

    def draft_vocabulary(self) -> int | None:
        """Ids the adaptive draft drafts over: its reduced vocabulary's size, or the whole vocabulary's
        (None without an adaptive draft)."""
        p = self.engine.proposers.get("adaptive")
        if not isinstance(p, AdaptiveProposer):
            return None
        return len(p.vocab.ids) if p.vocab is not None else p.lm.vocab_size

    def train_failures(self) -> int:
        """Failed background training steps of the current adaptive draft."""
        p = self.engine.proposers.get("adaptive")
        return p.train_failures if isinstance(p, AdaptiveProposer) else 0

    def verify(self, revision: str, artifact_uri: str, sha256: str, role: str, action: str) -> LoadedRevision:
        """Check a revision completely and load its model (no swap yet); raise APIError when refused."""
        if not self.has_adaptive and revision != STATIC:
            raise APIError(
                409, "this runtime's strategy has no adaptive draft to load a revision into", param="revision"
            )
        if revision == STATIC and not artifact_uri:
            if self.static_draft is None:
                raise APIError(409, "no static draft is loaded (--static-draft)", param="revision")
            record = RevisionRecord(STATIC, "", "", role, action, time.time())
            return LoadedRevision(
                record, copy.deepcopy(self.static_draft).to(self.device), self.static_counts
            )
        if not artifact_uri:
            raise APIError(400, f"revision {revision!r} needs an artifact_uri", param="artifact_uri")
        try:
            rev_dir = resolve(artifact_uri, "artifact_uri")
            digest = manifest_sha256(rev_dir)
            if sha256 and not hmac.compare_digest(digest, sha256.lower()):
                raise ArtifactMismatch(
                    f"sha256 of manifest.json in {str(rev_dir)!r} is {digest}, expected {sha256.lower()}"
                )
            model, manifest = load_revision(rev_dir, self.tokenizer_sha256, self.device)
            if manifest.revision != revision:
                raise ArtifactMismatch(
                    f"artifact {str(rev_dir)!r} holds revision {manifest.revision!r}, not {revision!r}"
                )
            counts = draft_counts(rev_dir, self.engine.target.vocab_size)
        except (ArtifactError, ModelLoadError, LocationError) as exc:
            raise refusal(exc) from None
        except ValueError as exc:  # token counts that do not fit this target's vocabulary
            raise APIError(422, str(exc), param="artifact_uri", kind="unprocessable_entity_error") from None
        record = RevisionRecord(revision, artifact_uri, digest, role, action, time.time())
        return LoadedRevision(record, model, counts)

    def activate(self, loaded: LoadedRevision) -> None:
        """Serve a verified revision (call on the engine's thread, between requests)."""
        if self.has_adaptive:
            lm = CachedLM(loaded.model.eval(), self.device)
            on_estimate = self.engine.controller.set_prior if self.engine.controller is not None else None
            proposer = AdaptiveProposer(lm, self.adaptive, on_estimate=on_estimate, counts=loaded.counts)
            self.engine.replace_proposer(proposer)
        self.current = loaded.record
        self.history.append(loaded.record)
        log.info(
            "event=revision_serving revision=%s role=%s sha256=%s action=%s",
            loaded.record.revision,
            loaded.record.role,
            loaded.record.sha256[:12] or "-",
            loaded.record.action or "-",
        )

    def listing(self) -> dict[str, Any]:
        """What `GET /admin/v1/revisions` answers."""
        current = asdict(self.current) if self.current is not None else None
        if current is not None:
            current["adaptive_version"] = self.adaptive_version()
            current["draft_vocabulary"] = self.draft_vocabulary()
        return {"serving": current, "history": [asdict(r) for r in self.history]}

    def close(self) -> None:
        """Stop the adaptive draft's trainer."""
        for proposer in self.engine.proposers.values():
            close = getattr(proposer, "close", None)
            if callable(close):
                close()
