"""``shelfguard``: the terminal entry point.

Exit codes: 0 OK / PROMOTED, 1 FAILED, ABANDONED (its process died) or an error (including a ledger that fails
verification: ``verify``, ``status``, ``search`` and ``rollback`` exit 1 naming the
bad row), 2 bad usage or input, 3 BLOCKED by a gate, 4 REJECTED at approval.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from shelfguard.config import Settings, SettingsError, load_settings
from shelfguard.failpoints import failpoint

EXIT_CODES = {"OK": 0, "PROMOTED": 0, "FAILED": 1, "ABANDONED": 1, "BLOCKED": 3, "REJECTED": 4}
OUTCOME_STYLE = {"OK": "green", "PROMOTED": "green", "BLOCKED": "red", "REJECTED": "yellow"}

console = Console(stderr=True)
out = Console(soft_wrap=True)


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


class TamperedError(Exception):
    """The ledger failed verification: reported in one line naming the bad row, exit code 1."""


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A progress bar callback ``(stage, done, total)``, or a no-op when output is JSON."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        TextColumn("{task.completed:>,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield update


def _ledger(settings: Settings) -> Any:
    """The home's ledger, once runs whose process died are marked ABANDONED."""
    from shelfguard.ledger import open_ledger
    from shelfguard.liveness import reap_abandoned

    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    reap_abandoned(settings, ledger)
    return ledger


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.generator import generate

    defects = [d.strip() for d in (args.defects or "").split(",") if d.strip()]
    out_dir = Path(args.out)
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"--out {args.out}: {blocker} exists and is not a folder")
    with _progress(not args.json) as progress:
        try:
            result = generate(
                out_dir,
                products=args.products,
                seed=args.seed,
                defects=defects,
                searches=args.searches,
                progress=progress,
                week=args.week,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise UsageError(
                f"--out {args.out}: cannot write there: {exc.strerror or exc}"
            ) from exc
    if args.json:
        out.print_json(
            json.dumps(
                {
                    "out_dir": str(result.out_dir),
                    "files": {k: str(v) for k, v in result.files.items()},
                    "rows": result.rows,
                    "defects": list(result.defects),
                }
            )
        )
        return 0
    table = Table("file", "rows", title=f"generated in {result.out_dir}")
    for key, path in result.files.items():
        table.add_row(path.name, f"{result.rows.get(key, 0):,}")
    out.print(table)
    if result.defects:
        out.print(f"defects injected: {', '.join(result.defects)}")
    return 0


def print_manifest(manifest: dict[str, Any]) -> None:
    """The batch manifest as a table a person can read, then what it means."""
    table = Table(title=f"batch {manifest['batch_id']}")
    for column in ("file", "sha256", "read", "accepted", "quarantined", "by reason"):
        table.add_column(column, overflow="fold")
    for f in manifest["files"]:
        reasons = ", ".join(f"{k}={v}" for k, v in f["quarantine_by_reason"].items()) or "-"
        table.add_row(
            f["file_name"],
            f["sha256"][:12],
            f"{f['rows_read']:,}",
            f"{f['rows_accepted']:,}",
            f"{f['rows_quarantined']:,}",
            reasons,
        )
    out.print(table)
    old = [f["file_name"] for f in manifest["files"] if f.get("already_ingested")]
    if old and len(old) == len(manifest["files"]):
        out.print("every file was already ingested: nothing was added")
    elif old:
        out.print(f"already ingested, nothing added for: {', '.join(old)}")
    quarantined = sum(f["rows_quarantined"] for f in manifest["files"])
    if quarantined:
        out.print(
            f"{quarantined:,} row(s) quarantined with their reason and original bytes "
            "(tables quarantine.*); the raw-data gate decides whether that is acceptable"
        )
    drift = [
        f"{f['file_name']}: {', '.join(f['extra_columns'])}"
        for f in manifest["files"]
        if f["extra_columns"]
    ]
    if drift:
        out.print(f"[yellow]unexpected extra columns (not loaded): {'; '.join(drift)}[/]")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.ingest import IngestError, ingest
    from shelfguard.pseudonyms import PseudonymKeyError
    from shelfguard.publication import land

    settings.ensure_dirs()
    ledger = _ledger(settings)
    try:
        with _progress(not args.json) as progress:
            manifest = ingest(Path(args.source), settings.warehouse_url, ledger, progress=progress)
        # Landed, not published: staging reads it only once a catalog_refresh run gates it.
        land(settings, ledger, manifest.batch_id, manifest.to_dict()["files"])
    except IngestError as exc:
        raise UsageError(f"ingest refused: {exc}") from exc
    except PseudonymKeyError as exc:
        raise UsageError(f"ingest cannot pseudonymise: {exc}") from exc
    finally:
        ledger.dispose()
    if args.json:
        out.print_json(manifest.to_json())
    else:
        print_manifest(manifest.to_dict())
    return 0


def _batch_summary(batch: Any) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "state": batch.state,
        "gate": batch.gate,
        "reason": batch.reason,
        "run_id": batch.run_id,
        "snapshot_id": batch.snapshot_id,
        "landed_at": batch.landed_at.isoformat(),
        "updated_at": batch.updated_at.isoformat(),
        "rows_read": batch.count("rows_read"),
        "rows_accepted": batch.count("rows_accepted"),
        "rows_quarantined": batch.count("rows_quarantined"),
        "files": batch.files,
        "history": [
            {
                "state": e.state,
                "at": e.at.isoformat(),
                "run_id": e.run_id,
                "by": e.actor,
                "reason": e.reason,
            }
            for e in batch.events
        ],
    }


_STATE_STYLE = {
    "published": "green",
    "blocked": "red",
    "purged": "dim",
    "landed": "yellow",
    "gated": "cyan",
}


def cmd_batches(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard batches [--json]`` and ``shelfguard batches purge BATCH --by --reason``."""
    from shelfguard.ledger import LedgerError

    if getattr(args, "action", None) == "purge":
        return _purge(args, settings)
    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    ledger = _ledger(settings)
    try:
        batches = ledger.batches(limit=args.limit, state=args.state)
    except LedgerError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()
    if args.json:
        out.print_json(json.dumps([_batch_summary(b) for b in batches]))
        return 0
    if not batches:
        out.print("no batches yet: `shelfguard run catalog_refresh --source DIR` lands one")
        return 0
    table = Table(title="batches (newest first)")
    for column in ("batch", "state", "gate", "rows", "quar.", "landed UTC"):
        table.add_column(column, no_wrap=True)
    for batch in batches:
        style = _STATE_STYLE.get(batch.state, "")
        table.add_row(
            batch.batch_id,
            f"[{style}]{batch.state}[/]" if style else batch.state,
            batch.gate or "",
            str(batch.count("rows_read")),
            str(batch.count("rows_quarantined")),
            batch.landed_at.strftime("%m-%d %H:%M"),
        )
    out.print(table)
    return 0


def _signer(name: str) -> Any:
    """The personal key ``--by NAME`` signs with (from ``shelfguard keys new NAME``)."""
    from shelfguard.signing import SigningError, load_signer

    try:
        return load_signer(name)
    except SigningError as exc:
        raise UsageError(str(exc)) from exc


def _policy_in_force(ledger: Any) -> Any:
    """The policy in force, from the ledger: its approvers may roll back and purge."""
    from shelfguard.policy_approval import PolicyApprovalError, in_force

    try:
        current = in_force(ledger)
    except PolicyApprovalError as exc:
        raise UsageError(str(exc)) from exc
    if current is None:
        raise UsageError(
            "no policy is in force yet: `shelfguard policy approve FILE --by NAME` puts one there"
        )
    return current.policy


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.ledger import LedgerError
    from shelfguard.publication import PublicationError, purge

    signer = _signer(args.by)
    ledger = _ledger(settings)
    try:
        policy = _policy_in_force(ledger)
        record, files = purge(
            settings, ledger, args.batch_id, signer=signer, policy=policy, reason=args.reason
        )
    except (PublicationError, LedgerError) as exc:
        raise UsageError(f"purge refused: {exc}") from exc
    finally:
        ledger.dispose()
    if args.json:
        payload = _batch_summary(record)
        payload["purged_files"] = [vars(f) for f in files]
        out.print_json(json.dumps(payload))
        return 0
    out.print(f"purged batch {record.batch_id}: {record.reason}")
    for f in files:
        what = f.kept_because or f"{f.raw_rows} raw + {f.quarantined_rows} quarantined rows deleted"
        out.print(f"  raw.{f.table} {f.sha256[:12]}: {what}")
    return 0


def gate_rows(run: Any, gates: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per gate of a run: its worst verdict, how many verdicts, the tasks that failed.

    A gate recorded as passed whose task (``<gate>_gate``, or a task of its ``<gate>.``
    group, as dbt's) failed is shown failed: a verdict is only recorded by tasks that ran.
    """
    failed_tasks = [str(t) for t in run.lineage.get("failed_tasks", [])]
    rows: dict[str, dict[str, Any]] = {}
    for gate in gates:
        row = rows.setdefault(gate.gate, {"name": gate.gate, "statuses": []})
        row["statuses"].append(gate.status)
    result = []
    for name, row in rows.items():
        statuses = row["statuses"]
        failed = [t for t in failed_tasks if t == f"{name}_gate" or t.startswith(f"{name}.")]
        worst = next((s for s in ("fail", "warn") if s in statuses), "pass")
        result.append(
            {
                "name": name,
                "status": "fail" if failed else worst,
                "verdicts": len(statuses),
                "passed": statuses.count("pass"),
                "failed_tasks": failed,
            }
        )
    return result


def _run_summary(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "dag_id": run.dag_id,
        "outcome": run.outcome,
        "blocked_gate": run.blocked_gate,
        "message": run.message,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _require_policy_in_force(settings: Settings) -> None:
    """Refuse before Airflow starts when the policy file is not the policy in force."""
    from shelfguard.policy import PolicyError, load_policy_with_bytes
    from shelfguard.policy_approval import PolicyApprovalError, require_in_force

    ledger = _ledger(settings)
    try:
        policy, data = load_policy_with_bytes()
        require_in_force(ledger, policy, data, settings.home)
    except (PolicyError, PolicyApprovalError) as exc:
        raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()


def run_pipeline(
    settings: Settings,
    dag_id: str,
    source: str | None,
    quiet: bool,
    extra_conf: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Run a DAG on the embedded runtime; returns the outcome and a JSON-ready summary."""
    from shelfguard.embedded import EmbeddedRunError, run_dag
    from shelfguard.progress import TaskEvent

    _require_policy_in_force(settings)
    conf = dict(extra_conf or {})
    # Who asked for the run (they may not approve its promotion) is the local user running
    # this command, handed to Airflow outside the conf: a conf key never names the trigger.
    user = getpass.getuser()
    if source:
        conf["source"] = str(Path(source).resolve())
    settings.ensure_dirs()
    began = time.monotonic()

    def ended(event: TaskEvent) -> str:
        took = "" if event.seconds is None else f"{event.seconds:7.1f} s"
        at = time.strftime("%M:%S", time.gmtime(time.monotonic() - began))
        return f"  {event.task_id:<44} {event.state:<16}{took:>10}   (at {at})"

    try:
        if quiet:
            result = run_dag(settings, dag_id, conf, triggered_by=user)
        elif console.is_terminal:
            # A live view: the task running now, each finished task above it.
            with console.status(f"{dag_id}: starting the embedded Airflow…") as status:

                def on_task(event: TaskEvent) -> None:
                    if event.state == "running":
                        status.update(f"{dag_id}: {event.task_id}")
                    else:
                        console.print(ended(event), markup=False, highlight=False)

                result = run_dag(settings, dag_id, conf, on_task=on_task, triggered_by=user)
        else:
            # In a log or under cron: one plain line per finished task, as it finishes.
            print(f"{dag_id}: running on the embedded Airflow", flush=True)

            def on_task_plain(event: TaskEvent) -> None:
                if event.state != "running":
                    print(ended(event), flush=True)

            result = run_dag(settings, dag_id, conf, on_task=on_task_plain, triggered_by=user)
    except EmbeddedRunError as exc:
        raise UsageError(str(exc)) from exc
    ledger = _ledger(settings)
    try:
        summary: dict[str, Any] = {"outcome": result.outcome, "log": str(result.log_path)}
        if result.run is not None:
            summary.update(_run_summary(result.run))
            summary["outcome"] = result.outcome
            summary["gates"] = gate_rows(result.run, ledger.gate_results(result.run.run_id))
            decisions = ledger.approvals(result.run.run_id)
            if decisions:
                latest = decisions[-1]
                summary["approval"] = {
                    "decision": latest.decision,
                    "decided_by": latest.decided_by,
                    "via": latest.via,
                    "comment": latest.comment,
                }
            from shelfguard.reports import report_path

            report = report_path(settings, result.run.run_id)
            summary["report"] = str(report) if report.exists() else None
    finally:
        ledger.dispose()
    return result.outcome, summary


def print_run(summary: dict[str, Any]) -> None:
    """One run's outcome with its gates."""
    outcome = summary["outcome"]
    style = OUTCOME_STYLE.get(outcome, "red")
    where = f" at gate [bold]{summary['blocked_gate']}[/]" if summary.get("blocked_gate") else ""
    out.print(
        f"[bold {style}]{outcome}[/]{where}  run {summary.get('run_id', '?')} ({summary.get('dag_id', '?')})"
    )
    # One line per gate: dbt records a verdict per model task, shown as a count.
    for gate in summary.get("gates", []):
        status = gate["status"]
        mark = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]"}.get(status, "[red]fail[/]")
        count = f"  ({gate['passed']}/{gate['verdicts']} passed)" if gate["verdicts"] > 1 else ""
        if gate["failed_tasks"]:
            count += f"  failed: {', '.join(gate['failed_tasks'])}"
        out.print(f"  gate {gate['name']:<20} {mark}{count}")
    approval = summary.get("approval")
    if approval:
        out.print(
            f"  approval {approval['decision']} by {approval['decided_by']} via {approval['via']}"
            + (f": {approval['comment']}" if approval["comment"] else "")
        )
    if summary.get("message"):
        out.print(f"  {summary['message']}")
    if summary.get("report"):
        out.print(f"  report: {summary['report']}")
    out.print(f"  log: {summary['log']}" if summary.get("log") else "")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        extra = json.loads(args.conf) if args.conf else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--conf is not valid JSON: {exc.msg}") from exc
    if not isinstance(extra, dict):
        raise UsageError('--conf must be a JSON object, e.g. \'{"train": {"epochs": 2}}\'')
    if args.source is not None and not Path(args.source).is_dir():
        what = "does not exist" if not Path(args.source).exists() else "is not a folder"
        raise UsageError(f"--source {args.source} {what}: give the folder with product.csv")
    outcome, summary = run_pipeline(settings, args.dag_id, args.source, args.json, extra)
    if args.json:
        out.print_json(json.dumps(summary))
    else:
        print_run(summary)
    return EXIT_CODES.get(outcome, 1)


def status_payload(settings: Settings, limit: int) -> dict[str, Any]:
    """The champion and the recent runs, each with its gates."""
    ledger = _ledger(settings)
    try:
        report = ledger.verify()
        champion = ledger.get_alias("champion")
        runs = []
        for run in ledger.recent_runs(limit=limit):
            item = _run_summary(run)
            gates = ledger.gate_results(run.run_id)
            item["gates"] = gate_rows(run, gates)
            evaluation = [g for g in gates if g.gate == "evaluation"]
            if evaluation:
                # challenger / champion / base / bm25 -> overall golden-set metrics
                item["metrics"] = evaluation[-1].metrics.get("overall", {})
            runs.append(item)
    finally:
        ledger.dispose()
    champion_json = None
    if champion is not None:
        champion_json = {
            "version": champion.version,
            "model": {"uri": champion.model.uri, "sha256": champion.model.sha256},
            "index": {"uri": champion.index.uri, "sha256": champion.index.sha256},
            "run_id": champion.run_id,
        }
    problem = report.first
    return {
        "home": str(settings.home),
        "ledger": {
            "intact": report.ok,
            "entries": report.entries,
            "problem": None if problem is None else str(problem),
            "problems": len(report.problems),
        },
        "champion": champion_json,
        "runs": runs,
    }


def _tampered_line(ledger_state: dict[str, Any]) -> str:
    more = ledger_state["problems"] - 1
    return (
        f"TAMPERED: the ledger failed verification: {ledger_state['problem']}"
        + (f" (and {more} more)" if more > 0 else "")
        + "; nothing below can be trusted (see `shelfguard verify`)"
    )


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the champion and recent runs; a ledger that fails verification prints
    a TAMPERED line first and exits 1 (also with ``--json``, whose ``ledger`` says why)."""
    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    payload = status_payload(settings, args.limit)
    intact = bool(payload["ledger"]["intact"])
    code = 0 if intact else 1
    if args.json:
        out.print_json(json.dumps(payload))
        return code
    if not intact:
        out.print(f"[bold red]{_tampered_line(payload['ledger'])}[/]", markup=True)
    champion = payload["champion"]
    if champion:
        out.print(
            f"champion v{champion['version']}: model {champion['model']['sha256'][:12]}"
            f" + index {champion['index']['sha256'][:12]} (run {champion['run_id']})"
        )
    else:
        out.print("champion: none yet")
    if not payload["runs"]:
        out.print(f"no runs recorded in {payload['home']}")
        return code
    table = Table(title="recent runs")
    for column in ("run_id", "dag_id", "outcome", "gates", "finished (UTC)"):
        table.add_column(column, overflow="fold")
    for run in payload["runs"]:
        gates = " ".join(f"{g['name']}:{g['status']}" for g in run["gates"]) or "-"
        outcome = run["outcome"] + (f" ({run['blocked_gate']})" if run["blocked_gate"] else "")
        finished = (run["finished_at"] or "-")[:19].replace("T", " ")
        table.add_row(run["run_id"], run["dag_id"], outcome, gates, finished)
    out.print(table)
    return code


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check the ledger's hash chain: exit 0 when intact, 1 naming the first bad row."""
    ledger = _ledger(settings)
    try:
        report = ledger.verify()
    finally:
        ledger.dispose()
    if args.json:
        out.print_json(json.dumps(report.to_dict()))
    elif report.ok:
        head = f" (head {report.head[:12]})" if report.head else ""
        out.print(f"OK: the ledger verifies, {report.entries} chain entries{head}")
    else:
        more = len(report.problems) - 1
        out.print(
            f"TAMPERED: {report.first}" + (f" (and {more} more)" if more > 0 else ""),
            markup=False,
        )
        for problem in report.problems[1:]:
            out.print(f"  also: {problem}", markup=False)
    return 0 if report.ok else 1


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.reports import ReportError, build_report, write_report

    ledger = _ledger(settings)
    try:
        run_id = args.run_id
        if run_id == "latest":
            runs = ledger.recent_runs(limit=1)
            if not runs:
                raise UsageError(f"no runs recorded in {settings.home}")
            run_id = runs[0].run_id
        try:
            path = write_report(settings, ledger, run_id, Path(args.out) if args.out else None)
            report = build_report(ledger, run_id)
        except ReportError as exc:
            raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()
    if args.json:
        out.print_json(json.dumps(report))
    else:
        out.print(f"{report['run']['verdict']}")
        out.print(f"report: {path}")
        out.print(f"        {path.with_suffix('.json')}")
    return 0


def _awaiting(ledger: Any, run_id: str) -> str:
    """``latest`` → the newest run that waits for a decision; other ids pass through."""
    if run_id != "latest":
        return run_id
    for run in ledger.recent_runs(limit=50):
        if run.outcome == "RUNNING" and run.lineage.get("index_sha256"):
            return str(run.run_id)
    raise UsageError("no run is waiting for approval (see `shelfguard status`)")


def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.approval import ApprovalError, record_decision
    from shelfguard.policy import PolicyError
    from shelfguard.run_context import RunContext, RunContextError

    if settings.approval_backend == "hitl":
        raise UsageError(
            "SHELFGUARD_APPROVAL_BACKEND=hitl: answer the approval in Airflow "
            "(Required Actions in the UI, or its REST API)"
        )
    decision = "approved" if args.command == "approve" else "rejected"
    signer = _signer(args.by)
    ledger = _ledger(settings)
    try:
        run_id = _awaiting(ledger, args.run_id)
        # The approvers are those of the policy the run pinned, not of the shell's file.
        policy = RunContext.for_run(run_id, settings=settings, ledger=ledger).policy
        record = record_decision(
            ledger,
            policy,
            run_id,
            decision,
            args.by,
            via="cli",
            comment=args.comment,
            signer=signer,
        )
    except (ApprovalError, PolicyError, RunContextError) as exc:
        raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()
    failpoint("approval.recorded")
    out.print(
        f"{record.decision} run {record.run_id}: model {record.model_sha256[:12]} + index "
        f"{record.index_sha256[:12]} by {record.decided_by} (signed)"
    )
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.promotion import PromotionRefused, rollback

    signer = _signer(args.by)
    ledger = _ledger(settings)
    try:
        policy = _policy_in_force(ledger)  # its approvers may roll back
        before = ledger.get_alias("champion")
        alias = rollback(ledger, policy, signer=signer, to_version=args.to, reason=args.reason)
        if before is None or before.version != alias.version:
            from shelfguard import notify

            notice = notify.champion_notice(alias, "rollback", args.by, args.reason)
            notify.send(policy, notice)
    except PromotionRefused as exc:
        if exc.tampered:
            raise TamperedError("rollback refused: " + "; ".join(exc.missing)) from exc
        raise UsageError("rollback refused: " + "; ".join(exc.missing)) from exc
    finally:
        ledger.dispose()
    failpoint("rollback.alias_moved")
    out.print(
        f"champion is now v{alias.version}: model {alias.model.sha256[:12]} + index "
        f"{alias.index.sha256[:12]} (from run {alias.run_id})"
    )
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard keys new NAME`` / ``shelfguard keys show NAME``."""
    from shelfguard.signing import SigningError, new_key, public_key_of

    try:
        if args.action == "new":
            path, public = new_key(args.name, force=args.force)
            console.print(f"private key: {path} (mode 600: keep it to yourself)")
        else:
            public = public_key_of(args.name)
    except SigningError as exc:
        raise UsageError(str(exc)) from exc
    out.print(public)
    if args.action == "new":
        console.print(
            "a governance owner lists it in governance.yml, then puts that policy in force:\n"
            f"  approval:\n    approvers:\n      - name: {args.name}\n        key: {public}\n"
            "  shelfguard policy approve governance.yml --by OWNER"
        )
    return 0


def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard policy approve [FILE] --by NAME`` / ``shelfguard policy show``."""
    from shelfguard.ledger import PolicyApprovalRecord
    from shelfguard.policy import PolicyError
    from shelfguard.policy_approval import PolicyApprovalError, approve, in_force

    ledger = _ledger(settings)
    record: PolicyApprovalRecord | None = None
    try:
        if args.action == "approve":
            signer = _signer(args.by)
            path = Path(args.file) if args.file else None
            record = approve(ledger, path, signer, comment=args.comment)
            current = in_force(ledger)
        else:
            current = in_force(ledger)
            record = None if current is None else current.record
    except (PolicyError, PolicyApprovalError) as exc:
        raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()
    if record is None or current is None:
        if args.json:
            out.print_json(json.dumps({"in_force": None}))
            return 0
        out.print("no policy is in force yet (`shelfguard policy approve FILE --by NAME`)")
        return 0
    approvers = [
        {"name": name, "key": current.policy.approval.key_of(name)}
        for name in current.policy.approval.approvers
    ]
    payload = {
        "in_force": record.policy_sha256,
        "source": current.policy.path,
        "approved_by": record.approved_by,
        "approved_at": record.approved_at.isoformat(),
        "via": record.via,
        "previous": record.previous_sha256,
        "approvers": approvers,
    }
    if args.json:
        out.print_json(json.dumps(payload))
        return 0
    out.print(
        f"policy in force: {record.policy_sha256[:12]} ({current.policy.path}), approved by "
        f"{record.approved_by} ({record.via}) at {record.approved_at:%Y-%m-%d %H:%M}Z"
    )
    for entry in approvers:
        out.print(f"  approver {entry['name']}: {entry['key'] or 'no key (Airflow only)'}")
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard history``: every version of the champion, and the recent outcomes."""
    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    ledger = _ledger(settings)
    try:
        moves = []
        for move in ledger.alias_history("champion"):
            model = ledger.get_artifact(move.model_artifact_id)
            index = ledger.get_artifact(move.index_artifact_id)
            moves.append(
                {
                    "version": move.version,
                    "action": move.action,
                    "model_sha256": model.sha256 if model else None,
                    "index_sha256": index.sha256 if index else None,
                    "run_id": move.run_id,
                    "by": move.moved_by,
                    "at": move.moved_at.isoformat(),
                    "reason": move.reason,
                }
            )
        runs = [_run_summary(r) for r in ledger.recent_runs(limit=args.limit)]
    finally:
        ledger.dispose()
    if args.json:
        out.print_json(json.dumps({"champion": moves, "runs": runs}))
        return 0
    if not moves:
        out.print("champion: none yet")
    for m in moves:
        out.print(
            f"v{m['version']:<3} {m['action']:<8} {m['at'][:16].replace('T', ' ')}  "
            f"model {str(m['model_sha256'])[:12]} + index {str(m['index_sha256'])[:12]}  "
            f"by {m['by']}: {m['reason']}"
        )
    counts: dict[str, int] = {}
    for run in runs:
        counts[run["outcome"]] = counts.get(run["outcome"], 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    out.print(f"last {len(runs)} run(s): {summary or 'none'}")
    return 0


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard gc [--dry-run] [--keep-days N]``: remove stored objects nothing needs."""
    from shelfguard.objects import collect

    if not 0 <= args.keep_days <= 36500:
        raise UsageError("--keep-days must be between 0 and 36500")
    ledger = _ledger(settings)
    try:
        found = collect(settings, ledger, keep_days=args.keep_days, dry_run=args.dry_run)
    finally:
        ledger.dispose()
    if args.json:
        out.print_json(json.dumps({"dry_run": args.dry_run, **vars(found)}))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    total = sum(r["bytes"] for r in found.removed)
    out.print(
        f"{verb} {len(found.removed)} stored object(s), {total / 1e6:.1f} MB; kept {found.kept}"
    )
    for r in found.removed:
        out.print(f"  {r['kind']} {r['sha256'][:16]}  {r['bytes'] / 1e6:.1f} MB")
    if found.partials:
        out.print(f"{verb} {len(found.partials)} partial copy(ies) an interrupted store left")
    return 0


def search_champion(settings: Settings, query: str, k: int) -> tuple[Any, list[Any]]:
    """Search the catalog with the champion pair; refuses a model and index that do not belong together."""
    if not query.strip():
        raise UsageError(
            'empty query: give the words to search for, e.g. shelfguard search "oak desk"'
        )
    if k < 1:
        raise UsageError(f"-k must be at least 1, got {k}")
    from shelfguard.ledger import LedgerTampered
    from shelfguard.serving.pairs import PairRefused, open_pair

    ledger = _ledger(settings)
    try:
        try:
            champion = ledger.verify_champion("champion")
        except LedgerTampered as exc:
            raise TamperedError(f"refusing to search: {exc}") from exc
        if champion is None:
            raise UsageError(
                "no champion yet: nothing has been promoted "
                "(run search_model_retraining until it ends PROMOTED, e.g. make demo)"
            )
        try:
            pair = open_pair(settings, ledger, champion, device="auto", verified=True)
        except PairRefused as exc:
            raise UsageError(f"refusing to search: {exc}") from exc
    finally:
        ledger.dispose()
    return champion, pair.searcher.search(query, k)


def print_hits(query: str, hits: list[Any]) -> None:
    """Search results as a table."""
    table = Table("#", "product_id", "score", "product", "class", title=f"search: {query!r}")
    for hit in hits:
        table.add_row(
            str(hit.rank),
            str(hit.product_id),
            f"{hit.score:.3f}",
            hit.product_name,
            hit.product_class,
        )
    out.print(table)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    champion, hits = search_champion(settings, args.query, args.k)
    if args.json:
        out.print_json(
            json.dumps(
                {
                    "query": args.query,
                    "champion": {
                        "version": champion.version,
                        "model_sha256": champion.model.sha256,
                        "index_sha256": champion.index.sha256,
                    },
                    "hits": [
                        {
                            "rank": h.rank,
                            "product_id": h.product_id,
                            "score": round(float(h.score), 6),
                            "product_name": h.product_name,
                            "product_class": h.product_class,
                        }
                        for h in hits
                    ],
                }
            )
        )
    else:
        print_hits(args.query, hits)
    return 0


def print_metrics(metrics: dict[str, dict[str, float]]) -> None:
    """Golden-set metrics per ranker, challenger first."""
    table = Table(title="golden-set evaluation (whole catalog ranked per query)")
    columns = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
    table.add_column("ranker")
    for column in columns:
        table.add_column(column, justify="right")
    for name in ("challenger", "champion", "base", "bm25"):
        if name in metrics:
            table.add_row(name, *(f"{metrics[name].get(c, float('nan')):.4f}" for c in columns))
    out.print(table)


def demo_queries(data_dir: Path, n: int = 3) -> list[str]:
    """Golden queries of ``n`` different product classes from the generated ``query.csv``."""
    chosen: dict[str, str] = {}
    lines = (data_dir / "query.csv").read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        _, query, query_class = ([*line.split("\t"), "", ""])[:3]
        if query and query_class and query_class not in chosen:
            chosen[query_class] = query
        if len(chosen) == n:
            break
    return list(chosen.values())


def _demo_week(settings: Settings, seed: int) -> tuple[int, Path]:
    """The week of the store of ``seed`` this demo lands: 1, then one more each time it
    runs in the same home; and its folder."""
    folder = settings.home / "demo-data" / f"seed-{seed}"
    landed = [p for p in folder.glob("week-*") if p.name.removeprefix("week-").isdigit()]
    week = 1 + max((int(p.name.removeprefix("week-")) for p in landed), default=0)
    return week, folder / f"week-{week}"


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Generate the demo dataset and run both DAGs end to end on the embedded default."""
    from shelfguard.generator import generate

    settings.ensure_dirs()
    week, data_dir = _demo_week(settings, args.seed)
    before = status_payload(settings, limit=1)["champion"]
    out.rule("shelfguard demo (embedded: SQLite Airflow, DuckDB warehouse, SQLite ledger)")
    out.print(f"home: {settings.home}")
    if before:
        out.print(
            f"a champion exists (v{before['version']}, run {before['run_id']}): this demo lands "
            f"week {week} of the same store (seed {args.seed}): last week's catalog with its "
            "change feed applied, and new searches. The new model is judged against the champion"
        )
    with _progress(True) as progress:
        result = generate(
            data_dir, products=args.products, seed=args.seed, progress=progress, week=week
        )
    out.print(
        f"1. generated {result.rows['product']:,} products, {result.rows['query']:,} golden queries,"
        f" {result.rows['label']:,} judgements, {result.rows['search_log']:,} search impressions"
        f" in {data_dir}"
    )
    out.print(
        "2. catalog_refresh: ingest -> raw-data gate (GX) -> dbt via Cosmos -> "
        "training-data gate (GX) -> publish the marts Assets"
        + (" -> incremental re-embedding with the champion -> index gate" if before else "")
    )
    outcome, summary = run_pipeline(settings, "catalog_refresh", str(data_dir), quiet=False)
    print_run(summary)
    if outcome != "OK":
        return EXIT_CODES.get(outcome, 1)
    out.print(
        "3. search_model_retraining: training-data gate -> fine-tune all-MiniLM-L6-v2 "
        "(local subprocess, the pod's entry point) -> evaluation gate -> embed the catalog "
        "-> index gate -> approval -> promote"
    )
    outcome, summary = run_pipeline(settings, "search_model_retraining", None, quiet=False)
    print_run(summary)
    status = status_payload(settings, limit=1)
    metrics = status["runs"][0].get("metrics") if status["runs"] else None
    if metrics:
        print_metrics(metrics)
    champion = status["champion"]
    if champion:
        out.print(
            f"champion v{champion['version']}: model {champion['model']['sha256'][:12]} + index "
            f"{champion['index']['sha256'][:12]} (run {champion['run_id']})"
        )
        for query in demo_queries(data_dir):
            _, hits = search_champion(settings, query, 5)
            print_hits(query, hits)
    if outcome == "BLOCKED" and before:
        out.print(
            "[yellow]The new model did not pass the evaluation gate against the champion: "
            f"champion v{champion['version'] if champion else '?'} stays in production, "
            "which is the gate doing its job.[/]"
        )
    out.print(
        f'next: .venv/bin/shelfguard status | search "QUERY" | rollback'
        f"   (SHELFGUARD_HOME={settings.home})"
    )
    # The demo ends well when the pipeline reached a governance decision; only an
    # error (FAILED), or a first run that promotes nothing, is a failed demo.
    if outcome in ("BLOCKED", "REJECTED") and before:
        return 0
    return EXIT_CODES.get(outcome, 1)


_EPILOG = """\
examples:
  shelfguard demo                                   generate data, refresh, train, promote
  shelfguard run catalog_refresh --source data/     land, gate and publish a delivery
  shelfguard status                                 the champion and the recent runs
  shelfguard approve latest --by alice              sign the approval a run waits for
  eval "$(shelfguard completion bash)"              complete commands and options in bash

exit codes:
  0 OK or PROMOTED   1 FAILED, ABANDONED or an error (a tampered ledger included)
  2 bad usage or input   3 BLOCKED by a gate   4 REJECTED at approval

environment:
  SHELFGUARD_HOME            the home (default ./.shelfguard): ledger, warehouse, artifacts
  SHELFGUARD_POLICY          the policy file (default governance.yml)
  SHELFGUARD_KEYS_DIR        personal signing keys (default ~/.shelfguard/keys)
  SHELFGUARD_WAREHOUSE_URL, SHELFGUARD_LEDGER_URL, SHELFGUARD_ARTIFACT_ROOT
                             production stores (README, "Settings")
  SHELFGUARD_DEBUG=1         show the traceback of an unexpected failure
"""


# --- shelfguard ui: the governance console (shelfguard.console) -----------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve product search from the champion pair, following the alias, until interrupted."""
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers must be between 1 and 64, got {args.workers}")
    for name in ("poll_seconds", "click_window", "rotate_seconds"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be above 0")
    if args.canary_share is not None and not 0 < args.canary_share <= 0.5:
        raise UsageError(f"--canary-share must be above 0 and at most 0.5, got {args.canary_share}")
    import uvicorn

    from shelfguard.serving.app import OPTIONS_ENV, ServeOptions

    options = ServeOptions(
        poll_seconds=args.poll_seconds,
        click_window=args.click_window,
        rotate_seconds=args.rotate_seconds,
        log_dir=str(Path(args.log_dir).resolve()) if args.log_dir else None,
        canary_share=args.canary_share,
    )
    os.environ[OPTIONS_ENV] = options.to_env()
    # The workers share the cores: each encodes on its share of them.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    log_dir = options.log_folder(settings)
    out.print(
        f"serving search on http://{args.host}:{args.port} (docs at /docs), "
        f"{args.workers} worker(s), following the champion in {settings.ledger_url}; "
        f"served searches go to {log_dir}"
    )
    uvicorn.run(
        "shelfguard.serving.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=not args.no_access_log,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_canary_status(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard canary status``: what the running canary and the champion served, and
    the online gate's verdict on it so far."""
    from shelfguard import canary
    from shelfguard.policy import CanaryPolicy
    from shelfguard.policy_approval import in_force
    from shelfguard.serving.app import ServeOptions

    folder = Path(args.log_dir) if args.log_dir else ServeOptions().log_folder(settings)
    ledger = _ledger(settings)
    try:
        found = in_force(ledger)
        policy = found.policy.canary if found is not None else CanaryPolicy()
        try:
            evidence = canary.evidence(ledger, folder, policy)
        except canary.CanaryError as exc:
            raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()
    verdict = canary.judge(evidence, policy)
    arms = {
        name: {
            "model_sha256": pair[0],
            "index_sha256": pair[1],
            "sessions": arm.sessions,
            "searches": arm.searches,
            "impressions": arm.impressions,
            "clicks": arm.clicks,
            policy.metric: round(arm.value, 6),
        }
        for name, arm, pair in (
            ("champion", evidence.champion, evidence.champion_pair),
            ("challenger", evidence.challenger, evidence.challenger_pair),
        )
    }
    payload = {
        "arms": arms,
        "decided": verdict.decided,
        "passed": verdict.passed,
        "difference": round(verdict.difference, 6),
        "lower_bound": None if not verdict.decided else round(verdict.lower, 6),
        "reason": verdict.reason,
    }
    if args.json:
        out.print_json(json.dumps(payload))
        return 0
    table = Table(title=f"canary: {policy.metric} by the pair that answered ({folder})")
    for column in ("arm", "model", "index", "sessions", "searches", "impressions", policy.metric):
        table.add_column(column)
    for name, arm in arms.items():
        table.add_row(
            name,
            str(arm["model_sha256"])[:12],
            str(arm["index_sha256"])[:12],
            f"{arm['sessions']:,}",
            f"{arm['searches']:,}",
            f"{arm['impressions']:,}",
            f"{arm[policy.metric]:.4f}",
        )
    out.print(table)
    word = "undecided" if not verdict.decided else ("passes" if verdict.passed else "fails")
    out.print(f"online gate {word}: {verdict.reason}")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Send simulated shoppers of a generated store to a running search service."""
    from shelfguard.generator import store_truth
    from shelfguard.serving.shoppers import (
        MAX_SESSIONS,
        SimulationError,
        check_loopback,
        simulate,
    )

    if not 1 <= args.sessions <= MAX_SESSIONS:
        raise UsageError(f"--sessions must be between 1 and {MAX_SESSIONS:,}, got {args.sessions}")
    try:
        url = check_loopback(args.url)
        try:
            truth = store_truth(args.products, args.seed, args.searches, week=args.week)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        with _progress(not args.json) as update:

            def advance(done: int, total: int) -> None:
                if update is not None:
                    update("simulated sessions", done, total)

            result = simulate(url, truth, args.sessions, seed=args.shopper_seed, progress=advance)
    except SimulationError as exc:
        raise UsageError(str(exc)) from exc
    summary = result.to_dict()
    if args.json:
        out.print_json(json.dumps(summary))
    else:
        table = Table(
            "index",
            "searches",
            "clicks",
            "CTR",
            "debiased CTR",
            "true nDCG@10",
            title=f"{summary['sessions']} simulated sessions against {url}",
        )
        for sha, traffic in summary["by_index"].items():
            table.add_row(
                sha[:12],
                str(traffic["searches"]),
                str(traffic["clicks"]),
                f"{traffic['ctr']:.3f}",
                f"{traffic['debiased_ctr']:.3f}",
                f"{traffic['true_ndcg@10']:.3f}",
            )
        out.print(table)
        if summary["errors"]:
            out.print(f"{summary['errors']} request(s) failed, e.g. {summary['first_errors'][0]}")
    return 1 if summary["errors"] else 0


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    """Serve Airflow's UI with the governance console on this home until interrupted."""
    from shelfguard.console.server import (
        DEMO_USERS,
        ConsoleError,
        console_url,
        ensure_demo_passwords,
        passwords_file,
        start_api_server,
        stop_api_server,
        wait_until_ready,
    )

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")

    def stopped(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does

    signal.signal(signal.SIGTERM, stopped)
    proc = start_api_server(settings, args.host, args.port)
    try:
        try:
            wait_until_ready(proc, args.host, args.port)
        except ConsoleError as exc:
            raise UsageError(f"{exc} (is port {args.port} free? try --port)") from exc
        out.print(f"governance console: {console_url(args.host, args.port)}")
        out.print(f"Airflow UI:         http://{args.host}:{args.port}/ (menu: Governance)")
        for name, password in ensure_demo_passwords(settings).items():
            out.print(f"  user {name} ({DEMO_USERS[name]}), password {password}")
        out.print(f"  (passwords kept in {passwords_file(settings)}); Ctrl-C stops the server")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_api_server(proc)


# --- end of shelfguard ui ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from shelfguard import __version__

    parser = argparse.ArgumentParser(
        prog="shelfguard",
        description="shelfguard: governed data and search-model pipelines on Airflow.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shelfguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a WANDS-layout dataset with behaviour logs")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--products", type=int, default=2000, help="catalog size (default 2000)")
    gen.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    gen.add_argument("--searches", type=int, default=None, help="searches in the behaviour log")
    gen.add_argument("--defects", default="", help="comma-separated defect names to inject")
    gen.add_argument(
        "--week",
        type=int,
        default=1,
        help="week N of the store of this seed: week N-1 with its change feed applied, "
        "new searches whose ids never repeat (default 1)",
    )
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(func=cmd_generate)

    ing = sub.add_parser("ingest", help="load a folder of raw files into the warehouse")
    ing.add_argument("--source", required=True, help="folder with product.csv and friends")
    ing.add_argument("--json", action="store_true", help="print the batch manifest as JSON")
    ing.set_defaults(func=cmd_ingest)

    run = sub.add_parser("run", help="run a DAG on the embedded default and print its outcome")
    run.add_argument("dag_id", help="catalog_refresh, ...")
    run.add_argument("--source", default=None, help="folder to ingest (catalog_refresh)")
    run.add_argument(
        "--conf", default=None, help='run conf / params as JSON, e.g. \'{"train": {"epochs": 2}}\''
    )
    run.add_argument("--json", action="store_true", help="print the outcome as JSON")
    run.set_defaults(func=cmd_run)

    bat = sub.add_parser(
        "batches", help="landed batches and their state: landed, gated, published, blocked, purged"
    )
    bat.add_argument("--limit", type=int, default=50, help="how many batches (default 50)")
    bat.add_argument("--state", default=None, help="only batches in this state")
    bat.add_argument("--json", action="store_true", help="print as JSON")
    bat.set_defaults(func=cmd_batches, action=None)
    bat_sub = bat.add_subparsers(dest="action")
    purge = bat_sub.add_parser(
        "purge", help="delete a blocked batch's raw and quarantined rows (recorded)"
    )
    purge.add_argument("batch_id", help="a blocked batch, from `shelfguard batches`")
    purge.add_argument(
        "--by", required=True, help="who purges it: an approver, signing with their key"
    )
    purge.add_argument("--reason", required=True, help="why (kept in the ledger)")
    purge.add_argument("--json", action="store_true", help="print the purged batch as JSON")
    purge.set_defaults(func=cmd_batches)

    st = sub.add_parser("status", help="the champion and the recent runs with their gates")
    st.add_argument("--limit", type=int, default=10, help="how many runs (default 10)")
    st.add_argument("--json", action="store_true", help="print as JSON")
    st.set_defaults(func=cmd_status)

    ver = sub.add_parser(
        "verify", help="check the ledger's hash chain: exit 0 intact, 1 naming the first bad row"
    )
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=cmd_verify)

    rep = sub.add_parser("report", help="write the governance report (HTML + JSON) of a run")
    rep.add_argument("run_id", help="a run id from `shelfguard status`, or `latest`")
    rep.add_argument(
        "--out", default=None, help="folder to write to (default: $SHELFGUARD_HOME/reports/RUN)"
    )
    rep.add_argument("--json", action="store_true", help="print the report JSON")
    rep.set_defaults(func=cmd_report)

    for verb, what in (("approve", "approve"), ("reject", "reject")):
        decide = sub.add_parser(verb, help=f"{what} the promotion a run waits for")
        decide.add_argument("run_id", help="the run id from `shelfguard status`, or `latest`")
        decide.add_argument(
            "--by",
            required=True,
            help="your name, as listed in approval.approvers; signs with your key",
        )
        decide.add_argument("--comment", default="", help="why (kept in the ledger)")
        decide.set_defaults(func=cmd_decide)

    back = sub.add_parser("rollback", help="move the champion back to an earlier approved pair")
    back.add_argument("--to", type=int, default=None, help="version (default: the one before)")
    back.add_argument(
        "--by",
        required=True,
        help="who rolls back: an approver of the policy in force, signing with their key",
    )
    back.add_argument("--reason", default="", help="why (kept in alias_history)")
    back.set_defaults(func=cmd_rollback)

    keys = sub.add_parser("keys", help="your personal signing key for decisions")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    key_new = keys_sub.add_parser("new", help="make a key pair; prints the public key")
    key_new.add_argument("name", help="your approver name")
    key_new.add_argument("--force", action="store_true", help="replace an existing key")
    key_new.set_defaults(func=cmd_keys)
    key_show = keys_sub.add_parser("show", help="print the public key of NAME's key pair")
    key_show.add_argument("name", help="an approver name")
    key_show.set_defaults(func=cmd_keys)

    pol = sub.add_parser("policy", help="the policy in force, and putting a new one in force")
    pol_sub = pol.add_subparsers(dest="action", required=True)
    pol_approve = pol_sub.add_parser(
        "approve", help="put a policy file in force (a signed decision of an approver)"
    )
    pol_approve.add_argument(
        "file", nargs="?", default=None, help="policy file (default: $SHELFGUARD_POLICY)"
    )
    pol_approve.add_argument("--by", required=True, help="your approver name; signs with your key")
    pol_approve.add_argument("--comment", default="", help="why (kept in the ledger)")
    pol_approve.add_argument("--json", action="store_true", help="print as JSON")
    pol_approve.set_defaults(func=cmd_policy)
    pol_show = pol_sub.add_parser("show", help="the policy in force and who approved it")
    pol_show.add_argument("--json", action="store_true", help="print as JSON")
    pol_show.set_defaults(func=cmd_policy)

    hist = sub.add_parser("history", help="every champion version, and the recent outcomes")
    hist.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    hist.add_argument("--json", action="store_true", help="print as JSON")
    hist.set_defaults(func=cmd_history)

    gc = sub.add_parser(
        "gc", help="remove stored models and indexes no alias, pending run or window needs"
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument(
        "--keep-days",
        type=float,
        default=7.0,
        help="keep everything registered in the last N days (default 7)",
    )
    gc.add_argument("--json", action="store_true", help="print as JSON")
    gc.set_defaults(func=cmd_gc)

    search = sub.add_parser("search", help="search the catalog with the champion model and index")
    search.add_argument("query", help="what a shopper would type")
    search.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.set_defaults(func=cmd_search)

    demo = sub.add_parser("demo", help="generate demo data and run the pipeline end to end")
    demo.add_argument("--products", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=cmd_demo)

    completion = sub.add_parser(
        "completion",
        help="print the shell code that completes shelfguard's commands and options",
        description='Add to ~/.bashrc: eval "$(shelfguard completion bash)" '
        "(zsh and fish likewise).",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="your shell")
    completion.set_defaults(func=cmd_completion)

    # shelfguard ui (the governance console)
    ui = sub.add_parser("ui", help="serve Airflow's UI with the governance console (demo users)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    ui.set_defaults(func=cmd_ui)
    serve = sub.add_parser(
        "serve", help="serve product search from the champion, swapping as the alias moves"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often to read the alias (default 1)"
    )
    serve.add_argument(
        "--click-window",
        type=float,
        default=600.0,
        help="seconds after a search that its clicks are taken (default 600)",
    )
    serve.add_argument(
        "--rotate-seconds",
        type=float,
        default=300.0,
        help="how often served searches are written out as a delivery folder (default 300)",
    )
    serve.add_argument(
        "--log-dir", help="where delivery folders go (default: <landing folder>/served)"
    )
    serve.add_argument("--no-access-log", action="store_true", help="no line per request")
    serve.add_argument(
        "--canary-share",
        type=float,
        help="share of sessions a running canary answers (default: the policy in force)",
    )
    serve.set_defaults(func=cmd_serve)
    canary_cmd = sub.add_parser(
        "canary", help="a challenger tried on a share of shoppers before it is champion"
    )
    canary_sub = canary_cmd.add_subparsers(dest="canary_command", required=True)
    canary_status = canary_sub.add_parser(
        "status", help="what the canary and the champion served, and the online verdict"
    )
    canary_status.add_argument(
        "--log-dir", help="the service's delivery folders (default: <landing folder>/served)"
    )
    canary_status.add_argument("--json", action="store_true", help="print the status as JSON")
    canary_status.set_defaults(func=cmd_canary_status)
    simulate = sub.add_parser(
        "simulate",
        help="send simulated shoppers of a generated store to a running search service",
    )
    simulate.add_argument("--sessions", type=int, required=True, help="shopping sessions to run")
    simulate.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the service (loopback only)"
    )
    simulate.add_argument(
        "--products", type=int, default=2000, help="the store's generate --products (default 2000)"
    )
    simulate.add_argument(
        "--seed", type=int, default=42, help="the store's generate --seed (default 42)"
    )
    simulate.add_argument("--searches", type=int, help="the store's generate --searches")
    simulate.add_argument(
        "--week", type=int, default=1, help="the store's generate --week (default 1)"
    )
    simulate.add_argument(
        "--shopper-seed", type=int, default=0, help="seed of the shoppers' choices (default 0)"
    )
    simulate.add_argument("--json", action="store_true", help="print the summary as JSON")
    simulate.set_defaults(func=cmd_simulate)
    return parser


def cmd_completion(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard completion SHELL``: the completion code for that shell (argcomplete)."""
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["shelfguard"], shell=args.shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the command, map errors to exit codes."""
    parser = build_parser()
    if argv is None and "_ARGCOMPLETE" in os.environ:  # a shell asks for completions
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if "SHELFGUARD_HOME" not in os.environ and args.command not in ("keys", "completion"):
            # A home defaulted from the current folder is easy to mistake for another.
            console.print(
                f"[dim]home: {settings.home} (SHELFGUARD_HOME is not set)[/]", soft_wrap=True
            )
        code: int = args.func(args, settings)
    except (UsageError, SettingsError) as exc:
        # One line, never wrapped: scripts grep it, people read it.
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 2
    except TamperedError as exc:
        console.print(f"[bold red]tampered:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if os.environ.get("SHELFGUARD_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {first}".rstrip(": ")
            + " (set SHELFGUARD_DEBUG=1 for the traceback)",
            soft_wrap=True,
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
