"""One typed context per task: the run, its settings, its ledger and its pinned policy.

A run reads ``governance.yml`` once, when it starts (:func:`pin_policy`): the bytes are
stored in the ledger under their sha256 and every later task of the run parses those
bytes again (:meth:`RunContext.for_run`), so editing the file in the middle of a run
changes nothing for that run (invariant 9: one policy from start to end). Tasks build
a :class:`RunContext` once and pass it on instead of re-deriving settings, ledger,
policy and paths each time. No Airflow import: the Airflow context is read as a mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upath import UPath

from shelfguard.config import Settings, load_settings
from shelfguard.ledger import Ledger, RunRecord, open_ledger
from shelfguard.lineage import ledger_run_id
from shelfguard.policy import Policy, PolicyError, load_policy_with_bytes, parse_policy


class RunContextError(RuntimeError):
    """The run is not in the ledger, or its pinned policy cannot be found."""


def pin_policy(ledger: Ledger, home: Path) -> Policy:
    """Read the policy file once and keep its bytes in the ledger; return what was pinned.

    The policy returned is the one validated from exactly the bytes stored, so it is what
    every later task parses back. It must be the policy in force
    (:func:`shelfguard.policy_approval.require_in_force`, which raises
    :class:`~shelfguard.policy_approval.PolicyApprovalError` otherwise; ``home`` holds
    the embedded set-up's key that puts a development policy in force).
    """
    from shelfguard.policy_approval import require_in_force

    pinned, data = load_policy_with_bytes()
    require_in_force(ledger, pinned, data, home)
    ledger.pin_policy(pinned.sha256, data.decode("utf-8"), pinned.path)
    return pinned


def pinned_policy(ledger: Ledger, sha256: str) -> Policy:
    """The policy a run pinned, parsed from the bytes the ledger keeps."""
    found = ledger.policy_content(sha256)
    if found is None:
        raise RunContextError(
            f"policy {sha256[:12]} is not in the ledger: the run did not pin it at start"
        )
    content, source = found
    try:
        return parse_policy(content.encode("utf-8"), source)
    except PolicyError as exc:  # the bytes were valid when pinned; a schema change broke them
        raise RunContextError(f"pinned policy {sha256[:12]} no longer validates: {exc}") from exc


def policy_of(ledger: Ledger, run: RunRecord) -> Policy | None:
    """The policy ``run`` pinned when it started, or None when it pinned none."""
    sha = str(run.lineage.get("policy_sha256") or "")
    return pinned_policy(ledger, sha) if sha else None


@dataclass(frozen=True)
class RunContext:
    """What every task of one run needs, built once per task."""

    run_id: str
    dag_id: str
    settings: Settings
    ledger: Ledger
    policy: Policy
    run: RunRecord

    @classmethod
    def for_run(
        cls, run_id: str, *, settings: Settings | None = None, ledger: Ledger | None = None
    ) -> RunContext:
        """The context of a run already started in the ledger, with its pinned policy."""
        settings = settings or load_settings()
        ledger = ledger or open_ledger(settings.ledger_url)
        run = ledger.get_run(run_id)
        if run is None:
            raise RunContextError(f"run {run_id!r} is not in the ledger: start the run first")
        policy = policy_of(ledger, run)
        if policy is None:
            raise RunContextError(f"run {run_id!r} pinned no policy when it started")
        return cls(
            run_id=run_id,
            dag_id=run.dag_id,
            settings=settings,
            ledger=ledger,
            policy=policy,
            run=run,
        )

    @classmethod
    def from_airflow(cls, context: Mapping[str, Any]) -> RunContext:
        """The context of the Airflow task's run (``context`` is Airflow's task context)."""
        return cls.for_run(airflow_run_id(context))

    @property
    def lineage(self) -> dict[str, Any]:
        """The run's lineage as it was when this context was built."""
        return self.run.lineage

    def refreshed(self) -> RunContext:
        """The same context with the run record read again (after a lineage update)."""
        run = self.ledger.get_run(self.run_id)
        assert run is not None
        return RunContext(self.run_id, self.dag_id, self.settings, self.ledger, self.policy, run)

    @property
    def run_dir(self) -> UPath:
        """The run's artifact folder (configs, results, the trained model, the index)."""
        return run_dir(self.settings, self.run_id)


#: Set by the embedded runner (``shelfguard run``) in the environment of the Airflow process
#: it starts: the local user who ran the command. Never read from a run's conf.
EMBEDDED_TRIGGER_ENV = "SHELFGUARD_EMBEDDED_TRIGGERED_BY"
_SCHEDULER_RUN_TYPES = {"scheduled", "asset_triggered", "backfill", "asset_materialization"}


def trigger_identity(context: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """Who triggered the run, from an identity the system verified (invariant 10).

    In order: the local user who ran ``shelfguard run`` (the embedded runner puts it in
    the environment of the Airflow process it starts; ``airflow dags test`` itself names
    every run's user ``dag_test``); the user Airflow authenticated when the run was
    triggered (UI, REST API: ``dag_run.triggering_user_name``); ``scheduler`` for
    scheduled, asset-triggered and backfill runs. ``dag_run.conf`` is never read: a name
    typed into the conf cannot make its author look like somebody else.
    """
    import os

    environ = os.environ if environ is None else environ
    embedded = environ.get(EMBEDDED_TRIGGER_ENV, "").strip()
    if embedded:
        return embedded
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return str(user)
    run_type = getattr(dag_run, "run_type", None)
    kind = str(getattr(run_type, "value", run_type) or "")
    if kind in _SCHEDULER_RUN_TYPES:
        return "scheduler"
    return "unknown"


def airflow_run_id(context: Mapping[str, Any]) -> str:
    """The ledger's run id of an Airflow task context (DAG id + Airflow run id)."""
    return ledger_run_id(str(context["dag"].dag_id), str(context["run_id"]))


def run_dir(settings: Settings, run_id: str) -> UPath:
    """The artifact folder of one run: ``<artifact root>/runs/<run id, made path-safe>``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)
    return UPath(settings.artifact_root) / "runs" / safe
