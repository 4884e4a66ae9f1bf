"""The dbt gate: every model built and every dbt test passed, one row per Cosmos task.

Cosmos runs one dbt command per task and, after it, hands the command's
``run_results.json`` to :func:`shelfguard.airflow.cosmos.record_dbt_results`, which runs this
gate with the node results as ``evidence`` (``results``, and ``subject``: the task id).
A node that errored or a test that failed fails the gate (dbt's ``warn`` severity
warns), so the governance report lists every model and test. A failing dbt test also
fails its task, so the models downstream of it never run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shelfguard.gates.core import Check, GateOutcome

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext

GATE = "dbt"
_STATUS = {"success": "pass", "pass": "pass", "warn": "warn", "skipped": "pass"}


def run(ctx: GateContext) -> GateOutcome:
    """The verdict on one dbt command's node results (``results``, ``subject``)."""
    checks: list[Check] = []
    for item in ctx.evidence["results"]:
        status = str(item.get("status", "")).lower()
        unique_id = str(item.get("unique_id", ""))
        checks.append(
            {
                "name": unique_id.split(".", 2)[-1] if unique_id.count(".") >= 2 else unique_id,
                "node": unique_id,
                "status": _STATUS.get(status, "fail"),
                "severity": "error",
                "observed": status,
                "unexpected_count": item.get("failures"),
                "message": (item.get("message") or "")[:500],
            }
        )
    return GateOutcome.of(GATE, str(ctx.evidence["subject"]), checks)
