"""Airflow operators of shelfguard.

Kept cheap to import: DAG files import this module on every parse, so Great
Expectations, pandas and the warehouse drivers are only imported when a task runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class GateOperator(BaseOperator):
    """Run one data gate (``raw_data`` or ``training_data``) for the DAG run.

    A ``fail`` verdict fails the task without retry (a governance decision, not a
    transient error) and stops everything downstream; ``warn`` is logged and the run
    goes on. The verdict, its checks and the Data Docs link are in the ledger either way.
    """

    template_fields: Sequence[str] = ("gate",)
    ui_color = "#e8f4ea"

    def __init__(self, *, gate: str, **kwargs: Any) -> None:
        """Store the gate's name; nothing runs until :meth:`execute`."""
        super().__init__(**kwargs)
        self.gate = gate

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the gate, log its checks, and fail the task when it blocks the run."""
        from shelfguard import gates
        from shelfguard.lineage import ledger_run_id

        # The ledger keys runs by DAG: Airflow run ids are unique only within one DAG.
        run_id = ledger_run_id(str(context["dag"].dag_id), str(context["run_id"]))
        outcome = gates.run_gate(self.gate, run_id)
        self.log.info("%s", outcome.summary)
        for item in outcome.failed_checks:
            self.log.warning(
                "%s %s: %s; expected %s. Catches: %s",
                item["status"].upper(),
                item["name"],
                item.get("message") or item.get("observed"),
                item.get("expected"),
                item.get("comment", ""),
            )
        if outcome.report_uri:
            self.log.info("Data Docs: %s", outcome.report_uri)
        if outcome.status == "fail":
            raise AirflowFailException(outcome.summary)
        return {
            "gate": outcome.gate,
            "status": outcome.status,
            "subject": outcome.subject,
            "failed_checks": [item["name"] for item in outcome.failed_checks],
            "report_uri": outcome.report_uri,
        }
