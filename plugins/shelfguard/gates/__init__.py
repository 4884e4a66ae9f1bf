"""Every governance gate, in one shape (see :mod:`shelfguard.gates.core`).

============== ================================ =============================== ===================
gate           judges                           subject                         run by
============== ================================ =============================== ===================
ingest         the landed files (file contract) ``batch:<id>``                  the ingest task
raw_data       a landed batch                   ``data:<batch id>``             :class:`GateOperator`
dbt            the dbt build and tests          the Cosmos task                 the Cosmos callback
training_data  the marts snapshot               ``data:<fingerprint>``          :class:`GateOperator`
evaluation     the challenger model             ``model:<sha256>``              :class:`GateOperator`
index          the catalog index                ``index:<sha256>``              :class:`GateOperator`
online         the canary's served answers      ``pair:<model>:<index>``        the online gate task
                                                                                (deferred to its trigger)
============== ================================ =============================== ===================

(:class:`GateOperator` is :class:`shelfguard.airflow.operators.GateOperator`.)

:func:`run_gate` runs a gate by name for a run and records its outcome. Each gate module
exposes ``GATE`` and ``run(ctx) -> GateOutcome``; severities come from the suite files and
``governance.yml``'s ``severities``, which overrides them per check name (``<suite>.<id>``,
or ``<gate>.<check>.<table>`` for the per-file checks and ``<gate>.required_suite.<suite>``
for the suites the policy requires, which also accept the family name ``<gate>.<check>``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from shelfguard.config import Settings, load_settings
from shelfguard.gates.common import MART_TABLES
from shelfguard.gates.core import (
    Check,
    Gate,
    GateContext,
    GateError,
    GateOutcome,
    check,
    gate_status,
    record,
)
from shelfguard.gates.training_data import total_variation
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.policy import Policy, load_policy
from shelfguard.quality import suites_of
from shelfguard.run_context import policy_of

__all__ = [
    "GATES",
    "MART_TABLES",
    "RAW_SUITES",
    "TRAINING_SUITES",
    "Check",
    "Gate",
    "GateContext",
    "GateError",
    "GateOutcome",
    "check",
    "gate_module",
    "gate_status",
    "record",
    "run_gate",
    "total_variation",
]

#: The gates :func:`run_gate` runs by name, each a module of this package.
GATES = ("ingest", "raw_data", "dbt", "training_data", "evaluation", "index", "online")
#: The suites each data gate runs as the project ships them (the gates discover them anew
#: at every run: a new file in ``expectations/`` is enough, see :func:`quality.suites_of`;
#: the policy's ``required_suites`` names those that must be there).
RAW_SUITES = suites_of("raw_data")
TRAINING_SUITES = suites_of("training_data")
# The gates that judge the warehouse: they cannot run before it exists.
_WAREHOUSE_GATES = ("raw_data", "training_data")


def gate_module(name: str) -> Gate:
    """The module of gate ``name`` (its ``GATE`` and ``run``)."""
    if name not in GATES:
        raise GateError(f"unknown gate {name!r}; known gates: {', '.join(GATES)}")
    module: ModuleType = importlib.import_module(f"shelfguard.gates.{name}")
    gate: Gate = module  # type: ignore[assignment]
    return gate


def run_gate(
    name: str,
    run_id: str,
    *,
    settings: Settings | None = None,
    policy: Policy | None = None,
    ledger: Ledger | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> GateOutcome:
    """Run gate ``name`` for ``run_id``, record its verdict and lineage, and return it.

    ``evidence`` is what the calling task hands the gate (see :class:`GateContext`).

    ``settings`` and ``ledger`` default to the process's own (environment); ``policy`` to
    the one the run pinned when it started. Raises :class:`GateError` when the gate cannot
    run (unknown name, no warehouse, no batch for a raw-data gate); a data problem is a
    ``fail`` outcome, never an exception. A gate's ``settle`` (when it has one) runs once
    the verdict is recorded: the raw-data gate moves the run's batch to ``gated`` or
    ``blocked``.
    """
    gate = gate_module(name)
    settings = settings or load_settings()
    if (
        name in _WAREHOUSE_GATES
        and settings.warehouse_kind == "duckdb"
        and not settings.duckdb_path.is_file()
    ):
        raise GateError(f"the warehouse {settings.duckdb_path} does not exist: nothing to check")
    owned = ledger is None
    if ledger is None:
        ledger = open_ledger(settings.ledger_url)
    try:
        run = ledger.get_run(run_id)
        if run is None:
            raise GateError(f"run {run_id!r} is not in the ledger: start the run first")
        # A run opened by hand without pinning a policy is judged by the file as it is now.
        policy = policy or policy_of(ledger, run) or load_policy()
        ctx = GateContext(run_id, run.dag_id, settings, ledger, policy, run, dict(evidence or {}))
        outcome = gate.run(ctx)
        record(ctx, outcome)
        settle = getattr(gate, "settle", None)
        if settle is not None:
            settle(ctx, outcome)
        return outcome
    finally:
        if owned:
            ledger.dispose()
