"""The CPU linear-layout tuner: every layout computes F.linear's result, and tuning never goes stale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaspec.runtime.cpukernels import LAYOUTS, STATE, TuningReport, tune_linears, untune


def _net(bias: bool = False) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(24, 40, bias=bias), torch.nn.Linear(40, 24, bias=bias))


def _forced(layout: str, rows: tuple[int, ...] = (1,), bias: bool = False) -> torch.nn.Sequential:
    """A tuned net whose layers all use `layout` (whatever the timing chose)."""
    net = _net(bias)
    tune_linears(net, rows=rows, repeats=1)
    for lin in net:
        vars(lin)[STATE].choice = dict.fromkeys(rows, layout)
    return net


def _reference(net: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for lin in net:
        assert isinstance(lin, torch.nn.Linear)
        x = F.linear(x, lin.weight, lin.bias)
    return x


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [False, True])
def test_each_layout_equals_f_linear_for_every_row_count(layout: str, bias: bool) -> None:
    net = _forced(layout, rows=(1, 4), bias=bias)
    with torch.inference_mode():
        for rows in (1, 2, 3, 5, 9, 16, 17, 40):
            x = torch.randn(1, rows, 24)  # [batch, seq, hidden], as a decoder layer sees it
            out = net(x)
            assert out.shape == (1, rows, 24)
            torch.testing.assert_close(out, _reference(net, x), rtol=1e-5, atol=1e-5)


def test_transposed_copy_follows_in_place_weight_updates() -> None:
    net = _forced("x_wt")
    x = torch.randn(1, 1, 24)
    with torch.inference_mode():
        before = net(x)
    with torch.no_grad():
        for lin in net:
            lin.weight.mul_(2.0)  # what an optimizer step or load_state_dict does: in place
    with torch.inference_mode():
        after = net(x)
    torch.testing.assert_close(after, _reference(net, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_a_deep_copy_trained_in_place_never_reads_the_originals_copy() -> None:
    import copy

    net = _forced("x_wt")
    x = torch.randn(1, 1, 24)
    with torch.inference_mode():
        net(x)  # builds the transposed copies
    clone = copy.deepcopy(net)
    with torch.no_grad():
        for lin in clone:
            lin.weight.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(clone(x), _reference(clone, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net(x), _reference(net, x), rtol=1e-5, atol=1e-5)


def test_training_uses_f_linear_so_gradients_flow() -> None:
    net = _forced("x_wt")
    net(torch.randn(1, 1, 24)).sum().backward()
    assert all(lin.weight.grad is not None for lin in net)


def test_shared_report_reuses_choices_and_times_only_new_shapes() -> None:
    first, second = _net(), _net()
    plan = tune_linears(first, rows=(1, 2), repeats=1)
    assert set(plan.choices) == {"40x24", "24x40"}
    assert all(set(c) == {1, 2} and set(c.values()) <= set(LAYOUTS) for c in plan.choices.values())
    plan.choices["40x24"] = {1: "w_xt", 2: "w_xt"}  # whatever was decided must be what the next model runs
    tune_linears(second, rows=(1, 2), repeats=1, report=plan)
    assert vars(second[0])[STATE].choice == {1: "w_xt", 2: "w_xt"}
    third = torch.nn.Sequential(torch.nn.Linear(24, 8))
    tune_linears(third, rows=(1,), repeats=1, report=plan)
    assert "8x24+bias" in plan.choices and plan.modules == 5


def test_non_float32_models_are_left_alone_and_untune_restores() -> None:
    half = _net().to(torch.bfloat16)
    assert tune_linears(half).modules == 0 and "forward" not in vars(half[0])
    net = _net()
    report = tune_linears(net, rows=(1,), repeats=1)
    assert isinstance(report, TuningReport) and "forward" in vars(net[0])
    untune(net)
    assert "forward" not in vars(net[0]) and STATE not in vars(net[0])
