"""The ledger's record of runs, the artifacts they produce and the gate verdicts on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from shelfguard.ledger.base import LedgerBase, _check_choice, _check_json, _columns
from shelfguard.ledger.chain import gate_payload
from shelfguard.ledger.models import Artifact, Collection, GateResult, Run
from shelfguard.ledger.records import (
    FINAL_OUTCOMES,
    GATE_STATUSES,
    ArtifactRecord,
    GateRecord,
    LedgerError,
    RunRecord,
    _artifact_record,
    _gate_record,
    _now,
    _run_record,
    _utc,
)


class RunsMixin(LedgerBase):
    """Runs (start, lineage, finish, look-up), gc collections, artifacts and gate verdicts."""

    # runs

    def start_run(
        self,
        run_id: str,
        dag_id: str,
        *,
        triggered_by: str | None = None,
        lineage: Mapping[str, object] | None = None,
    ) -> RunRecord:
        """Record that a run started; calling it again for the same run is safe.

        A repeated call keeps ``started_at`` and the first ``triggered_by``,
        merges ``lineage``, and sets the outcome back to RUNNING only while the
        run has not finished. A ``run_id`` already used by another DAG is refused.
        """
        items = _check_json("lineage", dict(lineage or {}))
        with self._writing() as session:
            insert = self._insert(
                Run,
                {
                    "run_id": run_id,
                    "dag_id": dag_id,
                    "started_at": _now(),
                    "outcome": "RUNNING",
                    "triggered_by": triggered_by,
                    "lineage": items,
                },
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["run_id"]))
            run = self._require_run(session, run_id, lock=True)
            if run.dag_id != dag_id:
                raise LedgerError(
                    f"run {run_id!r} belongs to DAG {run.dag_id!r}, not {dag_id!r}: "
                    "run ids must be unique across DAGs"
                )
            if run.finished_at is None:
                run.outcome = "RUNNING"
            if run.triggered_by is None:
                run.triggered_by = triggered_by
            if items:
                run.lineage = {**run.lineage, **items}
            session.flush()
            return _run_record(run)

    def update_lineage(self, run_id: str, **items: object) -> None:
        """Merge ``items`` into the run's lineage; a key given again is overwritten."""
        merged = _check_json("lineage", dict(items))
        with self._writing() as session:
            run = self._require_run(session, run_id, lock=True)
            run.lineage = {**run.lineage, **merged}

    def finish_run(
        self,
        run_id: str,
        outcome: str,
        *,
        blocked_gate: str | None = None,
        message: str | None = None,
    ) -> RunRecord:
        """Record how a run ended; finishing it again with the same outcome changes nothing.

        ``outcome`` is one of :data:`FINAL_OUTCOMES`; BLOCKED requires the gate
        that blocked (invariant 1).
        """
        _check_choice("outcome", outcome, FINAL_OUTCOMES)
        if outcome == "BLOCKED" and not blocked_gate:
            raise LedgerError(f"run {run_id!r}: outcome BLOCKED needs the blocked_gate")
        with self._writing() as session:
            run = self._require_run(session, run_id, lock=True)
            unchanged = run.finished_at is not None and (
                run.outcome,
                run.blocked_gate,
                run.message,
            ) == (outcome, blocked_gate, message)
            if not unchanged:
                run.outcome = outcome
                run.blocked_gate = blocked_gate
                run.message = message
                run.finished_at = _now()
                session.flush()
            return _run_record(run)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None if it was never started."""
        with self._reading() as session:
            run = session.get(Run, run_id)
            return None if run is None else _run_record(run)

    def artifacts(self, kinds: Sequence[str] = ()) -> list[ArtifactRecord]:
        """Every artifact (of ``kinds``, when given), oldest first."""
        query = sa.select(Artifact).order_by(Artifact.id)
        if kinds:
            query = query.where(Artifact.kind.in_(list(kinds)))
        return self._all(query, _artifact_record)

    def record_collection(self, removed: Sequence[Mapping[str, Any]], *, keep_days: float) -> None:
        """Record a ``shelfguard gc`` that removed these stored objects."""
        with self._writing() as session:
            session.add(
                Collection(
                    collected_at=_now(),
                    keep_days=float(keep_days),
                    removed=_check_json("removed", [dict(r) for r in removed]),
                )
            )

    def collections(self) -> list[dict[str, Any]]:
        """Every recorded collection (when, window, what it removed), oldest first."""
        with self._reading() as session:
            return [
                {
                    "collected_at": _utc(row.collected_at).isoformat(),
                    "keep_days": row.keep_days,
                    "removed": list(row.removed),
                }
                for row in session.scalars(sa.select(Collection).order_by(Collection.id))
            ]

    def run_of_request(self, dag_id: str, request_id: str) -> RunRecord | None:
        """The recent run of ``dag_id`` started for this request id (the embedded runner's)."""
        return next(
            (
                r
                for r in self.recent_runs(limit=50, dag_id=dag_id)
                if r.lineage.get("request_id") == request_id
            ),
            None,
        )

    def running_runs(self) -> list[RunRecord]:
        """Every run the ledger still calls ``RUNNING``, oldest first."""
        query = sa.select(Run).where(Run.outcome == "RUNNING").order_by(Run.started_at)
        return self._all(query, _run_record)

    def recent_runs(self, limit: int = 20, dag_id: str | None = None) -> list[RunRecord]:
        """The latest ``limit`` runs (of one DAG, if given), newest first."""
        if limit < 1:
            raise LedgerError(f"limit must be at least 1, got {limit}")
        query = sa.select(Run).order_by(Run.started_at.desc(), Run.run_id.desc()).limit(limit)
        if dag_id is not None:
            query = query.where(Run.dag_id == dag_id)
        with self._reading() as session:
            return [_run_record(run) for run in session.scalars(query)]

    # artifacts

    def record_artifact(
        self,
        kind: str,
        uri: str,
        sha256: str,
        *,
        produced_by_run: str | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> ArtifactRecord:
        """Register an artifact by content; the same (kind, sha256) returns the existing row."""
        if not kind or not sha256:
            raise LedgerError("an artifact needs a kind and a sha256")
        details = _check_json("meta", dict(meta or {}))
        with self._writing() as session:
            if produced_by_run is not None:
                self._require_run(session, produced_by_run)
            insert = self._insert(
                Artifact,
                {
                    "kind": kind,
                    "uri": uri,
                    "sha256": sha256,
                    "produced_by_run": produced_by_run,
                    "created_at": _now(),
                    "meta": details,
                },
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["kind", "sha256"]))
            row = session.execute(
                sa.select(Artifact).where(Artifact.kind == kind, Artifact.sha256 == sha256)
            ).scalar_one()
            if row.uri != uri and uri.rstrip("/").endswith(f"/objects/{kind}/{sha256}"):
                # The same content, now stored by its hash: the row follows it there.
                row.uri = uri
                session.flush()
            return _artifact_record(row)

    def get_artifact(self, artifact_id: int) -> ArtifactRecord | None:
        """The artifact with this id, or None."""
        with self._reading() as session:
            row = session.get(Artifact, artifact_id)
            return None if row is None else _artifact_record(row)

    def find_artifact(self, kind: str, sha256: str) -> ArtifactRecord | None:
        """The artifact of this kind with this content hash, or None."""
        with self._reading() as session:
            row = session.execute(
                sa.select(Artifact).where(Artifact.kind == kind, Artifact.sha256 == sha256)
            ).scalar_one_or_none()
            return None if row is None else _artifact_record(row)

    # gates

    def record_gate(
        self,
        run_id: str,
        gate: str,
        status: str,
        *,
        subject: str = "",
        checks: Sequence[Mapping[str, object]] | None = None,
        metrics: Mapping[str, object] | None = None,
        report_uri: str | None = None,
    ) -> GateRecord:
        """Record a gate's verdict; recording the same (run, gate, subject) again replaces it.

        The replaced row keeps its id (and so its place in :meth:`gate_results`)
        and takes the new status, checks, metrics, report and time.
        """
        _check_choice("gate status", status, GATE_STATUSES)
        if not gate:
            raise LedgerError("a gate result needs the gate's name")
        check_list = _check_json("checks", [dict(check) for check in checks or ()])
        metric_map = _check_json("metrics", dict(metrics or {}))
        with self._writing() as session:
            self._lock_chain(session)
            self._require_run(session, run_id)
            insert = self._insert(
                GateResult,
                {
                    "run_id": run_id,
                    "gate": gate,
                    "subject": subject,
                    "status": status,
                    "checks": check_list,
                    "metrics": metric_map,
                    "report_uri": report_uri,
                    "created_at": _now(),
                },
            )
            replaced = ("status", "checks", "metrics", "report_uri", "created_at")
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=["run_id", "gate", "subject"],
                    set_={column: insert.excluded[column] for column in replaced},
                )
            )
            row = session.execute(
                sa.select(GateResult).where(
                    GateResult.run_id == run_id,
                    GateResult.gate == gate,
                    GateResult.subject == subject,
                )
            ).scalar_one()
            # A replaced verdict gets a new chain entry; the same verdict again does not.
            self._chain(session, "gate", row.id, gate_payload(_columns(row)))
            return _gate_record(row)

    def gate_results(self, run_id: str) -> list[GateRecord]:
        """Every gate verdict of the run, in the order the gates were first recorded."""
        query = sa.select(GateResult).where(GateResult.run_id == run_id).order_by(GateResult.id)
        return self._all(query, _gate_record)

    def gates_on_subject(self, gate: str, subject: str) -> list[GateRecord]:
        """Every run's verdict of ``gate`` on ``subject`` (e.g. ``model:<sha>``), oldest first."""
        query = (
            sa.select(GateResult)
            .where(GateResult.gate == gate, GateResult.subject == subject)
            .order_by(GateResult.id)
        )
        return self._all(query, _gate_record)
