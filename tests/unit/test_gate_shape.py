"""Every gate has the same public shape, and one status rule decides every verdict."""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

from shelfguard import gates
from shelfguard.gates import GATES, GateContext, GateError, GateOutcome, gate_status


@pytest.mark.parametrize("name", GATES)
def test_every_gate_module_has_the_same_public_shape(name: str) -> None:
    module = importlib.import_module(f"shelfguard.gates.{name}")
    assert name == module.GATE
    assert module.__doc__ and module.__doc__.strip(), f"{name}: the module says what it checks"
    parameters = list(inspect.signature(module.run).parameters)
    assert parameters == ["ctx"]
    hints = typing.get_type_hints(module.run, vars(module) | {"GateContext": GateContext})
    assert hints["ctx"] is GateContext
    assert hints["return"] is GateOutcome
    assert gates.gate_module(name) is module
    settle = getattr(module, "settle", None)
    if settle is not None:
        assert list(inspect.signature(settle).parameters) == ["ctx", "outcome"]


def test_an_unknown_gate_is_refused_with_the_known_ones() -> None:
    with pytest.raises(GateError, match="unknown gate 'vibes'; known gates: ingest, raw_data"):
        gates.gate_module("vibes")


@pytest.mark.parametrize(
    ("statuses", "verdict"),
    [
        ([], "pass"),
        (["pass", "skipped"], "pass"),
        (["pass", "warn"], "warn"),
        (["warn", "fail", "pass"], "fail"),
    ],
)
def test_one_status_rule_for_every_gate(statuses: list[str], verdict: str) -> None:
    checks = [{"name": f"c{i}", "status": s} for i, s in enumerate(statuses)]
    assert gate_status(checks) == verdict
    assert GateOutcome.of("evaluation", "model:x", checks).status == verdict


def test_a_warned_check_of_the_evaluation_gate_warns_instead_of_passing() -> None:
    # The evaluation gate used its own status rule, which ignored ``warn``.
    checks = [
        {"name": "floor:ndcg@10", "status": "pass"},
        {"name": "slice:Sofas", "status": "warn"},
    ]
    outcome = GateOutcome.of("evaluation", "model:x", checks)
    assert outcome.status == "warn"
    assert outcome.summary == "evaluation WARN on model:x: 1 warning(s) (slice:Sofas)"
