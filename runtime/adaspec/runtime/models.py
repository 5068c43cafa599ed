"""Loading causal LMs from local Hugging Face directories, with a KV cache that rolls back exactly."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedTokenizerBase
from transformers import AutoTokenizer as _AutoTokenizer
from transformers.cache_utils import DynamicLayer

from adaspec.runtime.tree import DraftTree, tree_attention_mask, tree_position_ids

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# cached_ids holds this for each tree node between feed_tree and keep_path: the nodes are no sequence,
# and since no context token equals it, `sync` and `truncate` to the pending token drop the whole tree.
TREE_SLOT = -1
# Attention kernels that take a ready-made 4D additive mask (feed_tree needs one).
TREE_ATTENTION = ("eager", "sdpa")


class ModelLoadError(ValueError):
    """A model directory is missing, unsafe, or incompatible."""


def _check_model_dir(path: Path, role: str) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"{role} model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{role} model directory {str(path)!r} has no config.json")
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found pickle-based {pickles}; convert them to safetensors)" if pickles else ""
        raise ModelLoadError(f"{role} model directory {str(path)!r} has no *.safetensors weights{hint}")


def tokenizer_fingerprint(path: Path) -> str:
    """Return a sha256 over the tokenizer's vocabulary, merges and special tokens in `path`.

    Two tokenizers with the same fingerprint map text to the same ids, which is what a draft
    must share with its target.
    """
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise ModelLoadError(f"model directory {str(path)!r} has no tokenizer.json")
    data = json.loads(tok_file.read_text(encoding="utf-8"))
    relevant = {
        "model": data.get("model"),
        "added_tokens": [(t.get("id"), t.get("content")) for t in data.get("added_tokens", [])],
        "pre_tokenizer": data.get("pre_tokenizer"),
        "normalizer": data.get("normalizer"),
    }
    blob = json.dumps(relevant, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """Load the (fast) tokenizer of a model directory."""
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(f"model directory {str(path)!r} has no tokenizer.json")
    tok: PreTrainedTokenizerBase = _AutoTokenizer.from_pretrained(str(path))
    return tok


def load_causal_lm(path: Path, role: str, device: str = "cpu", dtype: torch.dtype | None = None) -> Any:
    """Load a causal LM from safetensors in `path` (never pickles), in eval mode on `device`."""
    _check_model_dir(path, role)
    kwargs: dict[str, Any] = {"use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load {role} model from {str(path)!r}: {exc}") from exc
    loaded: Any = model
    return loaded.to(device).eval()


def check_draft_compatible(target_dir: Path, draft_dir: Path, target_vocab: int, draft_vocab: int) -> None:
    """Raise ModelLoadError naming both directories when the draft cannot serve the target."""
    t_fp, d_fp = tokenizer_fingerprint(target_dir), tokenizer_fingerprint(draft_dir)
    if t_fp != d_fp:
        raise ModelLoadError(
            f"draft tokenizer in {str(draft_dir)!r} (sha256 {d_fp[:12]}) differs from the target's in "
            f"{str(target_dir)!r} (sha256 {t_fp[:12]}); a draft must share the target's tokenizer"
        )
    if draft_vocab != target_vocab:
        raise ModelLoadError(
            f"draft vocabulary size {draft_vocab} ({str(draft_dir)!r}) differs from the target's "
            f"{target_vocab} ({str(target_dir)!r})"
        )


@dataclass
class CachedLM:
    """A causal LM plus its KV cache and the token ids the cache holds.

    `feed` appends tokens and returns their logits; `truncate` drops cached positions (exact
    rollback of rejected draft tokens); `sync` keeps the longest cached prefix of a context.
    `feed_tree` scores a whole draft tree in one pass and `keep_path` then keeps one root path of it.
    """

    model: Any
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.cache = DynamicCache()
        self.cached_ids: list[int] = []
        # transformers >= 5.24 names the KV-cache argument `cache` (older: `past_key_values`)
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._can_keep = "logits_to_keep" in params
        self._tree: DraftTree | None = None  # the tree fed by feed_tree, until keep_path

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def max_positions(self) -> int:
        """Longest sequence the model accepts."""
        return int(getattr(self.model.config, "max_position_embeddings", 1 << 30))

    def reset(self) -> None:
        """Forget everything cached."""
        self.cache = DynamicCache()
        self.cached_ids = []

    @torch.inference_mode()
    def feed(self, ids: Sequence[int], last: int = 0) -> torch.Tensor:
        """Run the model on `ids` after the cached ones; return logits [len(ids), vocab] (float32).

        `last` > 0 returns only the last `last` positions' logits, and the output head runs only there
        (a prompt's prefill needs one row, not hundreds of vocab-sized ones).
        """
        if not ids:
            raise ValueError("feed needs at least one token")
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)  # [1, n]
        kwargs: dict[str, Any] = {self._cache_kw: self.cache}
        if last > 0 and self._can_keep:
            kwargs["logits_to_keep"] = last
        out = self.model(input_ids=x, use_cache=True, **kwargs)  # updates the cache
        self.cached_ids.extend(int(i) for i in ids)
        logits: torch.Tensor = out.logits[0].float()  # [n or last, vocab]
        return logits[-last:] if last > 0 else logits

    @torch.inference_mode()
    def feed_tree(self, pending: int, tree: DraftTree) -> torch.Tensor:
        """Score [pending, *tree nodes] in one pass after the cache; return logits [n+1, vocab] (float32).

        Row 0 scores the token after `pending`, row i+1 the token after node i's path. Each node attends
        to the cache, `pending`, its ancestors and itself, at position past_len + depth (SpecInfer,
        arXiv 2305.09781), so its logits equal those of feeding its path as a chain. Until `keep_path`,
        `cached_ids` ends with `pending` and one TREE_SLOT per node; call `keep_path` (or `sync`, which
        drops the whole tree) before `feed`.
        """
        return self._feed_tree(pending, tree, features=False)[0]

    @torch.inference_mode()
    def feed_tree_with_features(self, pending: int, tree: DraftTree) -> tuple[torch.Tensor, torch.Tensor]:
        """`feed_tree`, also returning the target's features [n+1, hidden] (float32), as
        `feed_with_features` does for a chain."""
        logits, hidden = self._feed_tree(pending, tree, features=True)
        assert hidden is not None
        return logits, hidden

    def _feed_tree(
        self, pending: int, tree: DraftTree, features: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        impl = getattr(self.model.config, "_attn_implementation", None)
        if impl not in TREE_ATTENTION:
            raise ValueError(f"feed_tree needs attention implementation in {TREE_ATTENTION}, got {impl!r}")
        if TREE_SLOT in self.cached_ids:
            raise ValueError("feed_tree called again before keep_path; keep a path of the last tree first")
        past_len = len(self.cached_ids)
        if past_len + 1 + tree.max_depth > self.max_positions:
            raise ValueError(
                f"tree of depth {tree.max_depth} after {past_len + 1} tokens exceeds max_positions "
                f"{self.max_positions}"
            )
        x = torch.tensor([[pending, *tree.token_ids]], dtype=torch.long, device=self.device)  # [1, n+1]
        mask = tree_attention_mask(tree, past_len, dtype=self.model.dtype, device=self.device)
        positions = tree_position_ids(tree, past_len).to(self.device)  # [1, n+1]
        kwargs: dict[str, Any] = {self._cache_kw: self.cache}
        args = {"input_ids": x, "attention_mask": mask, "position_ids": positions, "use_cache": True}
        hidden: torch.Tensor | None = None
        if features:
            h = self.model.model(**args, **kwargs).last_hidden_state[0]  # [n+1, hidden]
            logits: torch.Tensor = self.model.lm_head(h).float()  # [n+1, vocab]
            hidden = h.float()
        else:
            logits = self.model(**args, **kwargs).logits[0].float()  # [n+1, vocab]
        self.cached_ids.extend([int(pending), *([TREE_SLOT] * tree.n)])
        self._tree = tree
        return logits, hidden

    @torch.inference_mode()
    def keep_path(self, path: Sequence[int]) -> None:
        """After `feed_tree`, keep the cache of past + pending + the nodes on `path` (a root path).

        The kept keys and values are gathered along the sequence dimension of every layer; they equal
        those of feeding the path's tokens as a chain. An empty path keeps past + pending.
        """
        tree = self._tree
        held = len(self.cached_ids)
        if tree is None or held <= tree.n or self.cached_ids[held - tree.n :] != [TREE_SLOT] * tree.n:
            raise ValueError("keep_path needs a tree fed by feed_tree and not yet kept or truncated")
        tree.check_path(path)
        base = held - tree.n  # past_len + 1: positions up to and including pending
        index = torch.tensor([*range(base), *(base + i for i in path)], dtype=torch.long, device=self.device)
        kv: list[tuple[DynamicLayer, torch.Tensor, torch.Tensor]] = []
        for layer_idx, layer in enumerate(self.cache.layers):
            # exactly DynamicLayer: its subclasses (sliding window, quantized) keep state a gather would break
            if not isinstance(layer, DynamicLayer) or type(layer) is not DynamicLayer:
                raise ValueError(
                    f"keep_path supports DynamicLayer caches, layer {layer_idx} is {type(layer).__name__}"
                )
            keys, values = layer.keys, layer.values  # [batch, kv_heads, held, head_dim] each
            if not layer.is_initialized or keys is None or values is None:
                continue
            if keys.shape[-2] != held or values.shape[-2] != held:
                raise ValueError(f"cache layer {layer_idx} holds {keys.shape[-2]} positions, expected {held}")
            kv.append((layer, keys, values))
        for layer, keys, values in kv:
            layer.keys = keys.index_select(-2, index)  # [batch, kv_heads, base + len(path), head_dim]
            layer.values = values.index_select(-2, index)
        del self.cached_ids[base:]
        self.cached_ids.extend(tree.token_ids[i] for i in path)
        self._tree = None

    def _layers(self, ids: Sequence[int]) -> torch.Tensor:
        """The decoder (no output head) on `ids` after the cached ones: final hidden states [n, hidden]."""
        if not ids:
            raise ValueError("feed needs at least one token")
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)  # [1, n]
        out = self.model.model(input_ids=x, use_cache=True, **{self._cache_kw: self.cache})
        self.cached_ids.extend(int(i) for i in ids)
        hidden: torch.Tensor = out.last_hidden_state[0]  # [n, hidden]
        return hidden

    @torch.inference_mode()
    def feed_with_features(self, ids: Sequence[int], last: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`feed`, also returning the target's features [len(ids), hidden] (float32): the final hidden
        states after the final norm, what the output head reads (feature-level drafts learn from them).

        The output head runs only on the last `last` positions when `last` > 0, as in `feed`.
        """
        hidden = self._layers(ids)  # [n, hidden]
        rows = hidden[-last:] if last > 0 else hidden
        logits: torch.Tensor = self.model.lm_head(rows).float()  # [n or last, vocab]
        return logits, hidden.float()

    @torch.inference_mode()
    def feed_hidden(self, ids: Sequence[int], last: int = 0) -> torch.Tensor:
        """Feed `ids` without the output head; return the final hidden states [len(ids) or last, hidden]
        (float32). A catch-up that needs no logits uses it, and so does a draft with a head of its own
        (a reduced vocabulary's rows of `head_weight`)."""
        hidden = self._layers(ids)  # [n, hidden]
        return (hidden[-last:] if last > 0 else hidden).float()

    @property
    def head_weight(self) -> torch.Tensor:
        """The output layer's weight [vocab, hidden]."""
        weight: torch.Tensor = self.model.get_output_embeddings().weight
        return weight

    @torch.inference_mode()
    def head_is_plain(self) -> bool:
        """Whether the logits are exactly the final hidden states times `head_weight` (no bias, scale or
        soft-cap), so that rows of it score a reduced vocabulary; probed on one token, cache untouched."""
        head = self.model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            return False
        x = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        logits = self.model(input_ids=x).logits[0, -1].float()  # [vocab]
        hidden = self.model.model(input_ids=x).last_hidden_state[0, -1].float()  # [hidden]
        return bool(torch.allclose(hidden @ self.head_weight.float().T, logits, rtol=1e-3, atol=1e-3))

    def truncate(self, length: int) -> None:
        """Keep only the first `length` cached positions."""
        drop = len(self.cached_ids) - length
        if drop < 0:
            raise ValueError(f"cannot truncate a cache of {len(self.cached_ids)} to {length}")
        if drop:
            self.cache.crop(-drop)
            del self.cached_ids[length:]

    def sync(self, context: Sequence[int]) -> list[int]:
        """Roll the cache back to its longest prefix shared with `context`; return the ids still to feed.

        At least one id is always returned, so that feeding them yields the next-token logits.
        """
        n = self.kept(context)
        self.truncate(n)
        return list(context[n:])

    def kept(self, context: Sequence[int]) -> int:
        """Cached positions `sync(context)` would keep (the shared prefix, short of the last id)."""
        n = 0
        limit = min(len(self.cached_ids), len(context))
        while n < limit and self.cached_ids[n] == context[n]:
            n += 1
        return min(n, len(context) - 1)


def small_llama(
    vocab_size: int,
    hidden: int = 16,
    layers: int = 1,
    heads: int = 2,
    kv_heads: int = 1,
    intermediate: int = 32,
    max_positions: int = 128,
    seed: int | None = 0,
) -> Any:
    """A freshly initialised Llama with tied embeddings (fixtures, scratch drafts, tests); eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    model: Any = LlamaForCausalLM(cfg)
    return model.eval()
