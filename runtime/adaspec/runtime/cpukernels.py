"""Small-batch linear layers on CPU: per weight shape and row count, the fastest of three equal layouts.

Speculative decoding lives on the cost of verifying q tokens against the cost of one. On CPUs the BLAS
call behind `F.linear` is tuned for one row (GEMV) or for many; for 2..8 rows it can be slower than one
row by 1.5x and more (measured with MKL on the 2-core AMD EPYC this project is tested on: SmolLM2-135M,
one token 56 ms, two tokens 93 ms), which eats most of what a draft wins. The same product can be
computed as `x @ W.T` (F.linear), `(W @ x.T).T`, or `x @ Wt` with a transposed copy of W, and which is
fastest depends on the BLAS, the CPU and the shape. `tune_linears` times the three once per distinct
shape and row count at load and installs the fastest; results equal F.linear's up to float rounding.

Meant for frozen models (target, static draft), it stays correct for any: while autograd records (a
training step) the layer uses F.linear, and the transposed copy is rebuilt when the weight changes in
place (an optimizer step or `load_state_dict` bumps the tensor's version counter).
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

LAYOUTS = ("linear", "w_xt", "x_wt")
TUNED_ROWS = (1, 2, 4, 8)  # verify widths (k + 1) timed; a width in between uses the one below it
MAX_TUNED_ROWS = 16  # above this (prefill, training) F.linear's GEMM path is left alone


@dataclass
class TuningReport:
    """Which layout each (out, in) shape uses per row count."""

    choices: dict[str, dict[int, str]] = field(default_factory=dict)
    seconds: float = 0.0
    modules: int = 0

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view (for benchmark setups)."""
        return {
            "modules": self.modules,
            "seconds": round(self.seconds, 2),
            "choices": {shape: {str(m): c for m, c in rows.items()} for shape, rows in self.choices.items()},
        }


@dataclass
class _LayerKernels:
    """Per-Linear state: the layout per row count, and the transposed weight copy with its version."""

    choice: dict[int, str]
    wt: torch.Tensor | None = None
    wt_key: tuple[int, int] = (0, -1)  # (weight storage address, version) the copy was made from


STATE = "_adaspec_kernels"  # kept in the module's __dict__: a plain attribute, never in the state dict


def _state(module: torch.nn.Linear) -> _LayerKernels:
    state: _LayerKernels = vars(module)[STATE]
    return state


def _transposed(module: torch.nn.Linear) -> torch.Tensor:
    """The module's W.T as a contiguous copy, rebuilt when the weight changed in place or was replaced.

    The address matters besides the version: a deep copy of the module (the adaptive draft starts as
    one) has a new weight whose version counter restarts and could meet the old number again.
    """
    state, weight = _state(module), module.weight
    key = (weight.data_ptr(), weight._version)
    if state.wt is None or state.wt_key != key:
        with torch.no_grad():
            state.wt = weight.detach().t().contiguous()  # [in, out]
        state.wt_key = key
    return state.wt


def _product(layout: str, rows: torch.Tensor, module: torch.nn.Linear) -> torch.Tensor:
    """rows [m, in] -> [m, out] by `layout` (bias added)."""
    if layout == "w_xt":
        out = (module.weight @ rows.T).T.contiguous()  # [out, m] -> [m, out]
    elif layout == "x_wt":
        out = rows @ _transposed(module)  # [m, in] @ [in, out]
    else:
        return F.linear(rows, module.weight, module.bias)
    return out + module.bias if module.bias is not None else out


def _tuned_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if (
        rows == 0
        or rows > MAX_TUNED_ROWS
        or x.device.type != "cpu"
        or (torch.is_grad_enabled() and self.weight.requires_grad)
    ):
        return F.linear(x, self.weight, self.bias)
    choice = _state(self).choice
    layout = choice.get(rows) or choice[max(m for m in choice if m <= rows)]
    if layout == "linear":
        return F.linear(x, self.weight, self.bias)
    out = _product(layout, x.reshape(rows, x.shape[-1]), self)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _over_group(layout: str, x: torch.Tensor, group: Sequence[torch.nn.Linear]) -> None:
    for lin in group:
        _product(layout, x, lin)


def _time_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - started) * 1000.0)
    return best


def tune_linears(
    model: torch.nn.Module,
    rows: Sequence[int] = TUNED_ROWS,
    repeats: int = 3,
    seed: int = 0,
    report: TuningReport | None = None,
) -> TuningReport:
    """Time each layout per distinct Linear shape and row count; install the fastest on every Linear.

    Shapes already in `report` (tuned on another model) reuse its choice without timing, so that models
    compared side by side run the same kernels; new shapes are timed and added. Only float32 models on
    CPU are tuned; anything else is left untouched.
    """
    report = report if report is not None else TuningReport()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or any(m.weight.device.type != "cpu" or m.weight.dtype != torch.float32 for m in linears):
        return report
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    by_shape: dict[tuple[int, int, bool], list[torch.nn.Linear]] = {}
    for lin in linears:
        by_shape.setdefault((lin.out_features, lin.in_features, lin.bias is not None), []).append(lin)
    with torch.inference_mode():
        for (n_out, n_in, has_bias), group in by_shape.items():
            key = f"{n_out}x{n_in}" + ("+bias" if has_bias else "")
            choice = report.choices.get(key, {})
            for lin in group:  # timing below needs the state (x_wt builds its copy there)
                vars(lin)[STATE] = _LayerKernels(choice)
            for m in sorted(set(rows)) if not choice else ():
                x = torch.randn(m, n_in, generator=generator)  # [m, in]
                # Over every layer of the shape in turn, so that weights stream from memory as they
                # do in a forward pass instead of sitting in cache.
                best_ms = {
                    layout: _time_ms(partial(_over_group, layout, x, group), repeats) for layout in LAYOUTS
                }
                choice[m] = min(LAYOUTS, key=best_ms.__getitem__)
            report.choices[key] = choice
            for lin in group:
                if "x_wt" not in choice.values():  # a copy made while timing is not needed
                    _state(lin).wt = None
                lin.forward = types.MethodType(_tuned_forward, lin)  # type: ignore[method-assign]
            report.modules += len(group)
    report.seconds += time.perf_counter() - started
    return report


def untune(model: torch.nn.Module) -> None:
    """Restore plain F.linear on every Linear of `model` (drops the transposed copies)."""
    for lin in model.modules():
        if isinstance(lin, torch.nn.Linear):
            vars(lin).pop("forward", None)
            vars(lin).pop(STATE, None)
