"""Airflow operators of shelfguard: the gates, the approval task and the online gate.

Kept cheap to import: DAG files import this module on every parse, so Great
Expectations, pandas and the warehouse drivers are only imported when a task runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from shelfguard.airflow.approval_steps import (
    context_run,
    finish_decision,
    tell_waiting,
)
from shelfguard.model.approval import (
    approve_by_policy,
    evidence,
    wait_for_decision,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from shelfguard.gates import GateOutcome


class GateOperator(BaseOperator):
    """Run one gate of :mod:`shelfguard.gates` (``raw_data``, ``training_data``,
    ``evaluation``, ``index``) for the DAG run and record its verdict.

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
        return self.conclude(gates.run_gate(self.gate, run_id))

    def conclude(
        self, outcome: GateOutcome, *, on_fail: Callable[[], object] | None = None
    ) -> dict[str, Any]:
        """Log the verdict and its failed checks; a ``fail`` runs ``on_fail`` (what must be
        undone before the run stops), then fails the task without retry."""
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
            if on_fail is not None:
                on_fail()
            raise AirflowFailException(outcome.summary)
        return {
            "gate": outcome.gate,
            "status": outcome.status,
            "subject": outcome.subject,
            "failed_checks": [item["name"] for item in outcome.failed_checks],
            "report_uri": outcome.report_uri,
        }


class LedgerApprovalOperator(BaseOperator):
    """Approval on the ``ledger`` backend: policy ``auto``, or wait for ``shelfguard approve``."""

    ui_color = "#fff4d6"

    def __init__(self, *, index_refresh: bool = False, **kwargs: Any) -> None:
        """``index_refresh``: the pair is the champion model with a refreshed index."""
        super().__init__(**kwargs)
        self.index_refresh = index_refresh

    def execute(self, context: Context) -> dict[str, Any]:
        """Record the policy's approval or wait (with a real timeout) for a person's decision."""
        ledger, policy, run_id = context_run(context)
        mode = policy.approval.index_refresh if self.index_refresh else policy.approval.mode
        if mode == "auto":
            why = (
                "index rebuilt with the approved champion model; index gate passed"
                if self.index_refresh
                else "approval.mode is auto (embedded development)"
            )
            return finish_decision(approve_by_policy(ledger, policy, run_id, why), self.log)
        self.log.info("%s", evidence(ledger, run_id))
        tell_waiting(
            ledger, policy, run_id, f"Answer: shelfguard approve|reject {run_id} --by NAME", context
        )
        decision = wait_for_decision(
            ledger,
            policy,
            run_id,
            timeout_seconds=policy.approval.timeout_minutes * 60,
            log=self.log,
        )
        return finish_decision(decision, self.log)


def hitl_operator(task_id: str, **kwargs: Any) -> BaseOperator:
    """Approval on the ``hitl`` backend: Airflow's ApprovalOperator, answered by a person
    (:class:`~shelfguard.airflow.hitl_approval.GovernanceApprovalOperator`)."""
    from shelfguard.airflow.hitl_approval import GovernanceApprovalOperator

    return GovernanceApprovalOperator(
        task_id=task_id,
        subject="Promote the search model?",
        defaults="Reject",
        response_timeout=timedelta(days=1),
        **kwargs,
    )


def approval_operator(task_id: str, *, index_refresh: bool = False, **kwargs: Any) -> BaseOperator:
    """The approval task on the configured backend (call in a DAG file)."""
    from shelfguard.config import load_settings

    if load_settings().approval_backend == "hitl" and not index_refresh:
        return hitl_operator(task_id, **kwargs)
    return LedgerApprovalOperator(task_id=task_id, index_refresh=index_refresh, **kwargs)


class OnlineGateOperator(GateOperator):
    """The gate ``online``, deferred: waits for the canary's impressions in the triggerer (no worker
    slot held), then compares the challenger with the champion on what shoppers did.

    Runs only while this run's pair is the canary (see ``start_canary``); otherwise it
    says why and passes the run on. A challenger that loses (or a canary that gathered
    too few impressions by ``canary.max_wait_minutes``) is taken out of the canary, the
    verdict is recorded as the gate ``online``, and the run ends BLOCKED there.
    """

    ui_color = "#fdf1dc"

    def __init__(self, *, poll_seconds: float = 30.0, **kwargs: Any) -> None:
        """``poll_seconds``: how often the trigger counts the served impressions."""
        super().__init__(gate="online", **kwargs)
        self.poll_seconds = poll_seconds

    def execute(self, context: Context) -> dict[str, Any]:
        """Defer until the canary has its impressions, or pass when no canary runs."""
        import time

        from shelfguard.airflow.canary_trigger import CanaryTrigger
        from shelfguard.config import load_settings
        from shelfguard.model import canary
        from shelfguard.model.promotion import ALIAS

        ledger, policy, run_id = context_run(context)
        running, champion = canary.running(ledger), ledger.get_alias(ALIAS)
        if running is None or champion is None or running.run_id != run_id:
            self.log.info("no canary of this run is serving: the online gate does not apply")
            return {"online": "not applicable"}
        pairs = [
            [champion.model.sha256, champion.index.sha256],
            [running.model.sha256, running.index.sha256],
        ]
        folder = str(canary.served_folder(load_settings()))
        self.log.info(
            "waiting for %d impressions of each pair in %s (canary on %.0f%% of sessions)",
            policy.canary.min_impressions,
            folder,
            100 * policy.canary.share,
        )
        self.defer(
            trigger=CanaryTrigger(
                folder=folder,
                pairs=pairs,
                min_impressions=policy.canary.min_impressions,
                deadline=time.time() + 60 * policy.canary.max_wait_minutes,
                since=running.updated_at.isoformat(),
                poll_seconds=self.poll_seconds,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Judge the evidence the canary gathered; record it; block a losing challenger."""
        from shelfguard.gates import run_gate
        from shelfguard.model import canary

        ledger, policy, run_id = context_run(context)
        timed_out = not event.get("ready")
        outcome = run_gate(
            "online", run_id, policy=policy, ledger=ledger, evidence={"timed_out": timed_out}
        )
        test = outcome.checks[-1]
        reason = str(test["comment"])
        self.log.info("online gate %s: %s", outcome.status, reason)
        summary = self.conclude(
            outcome,
            on_fail=lambda: canary.end(ledger, by="policy", reason=f"online gate failed: {reason}"),
        )
        observed = test["observed"]
        return {
            **summary,
            "online": outcome.status,
            "difference": observed["difference"],
            "lower": observed["lower_bound"],
        }
