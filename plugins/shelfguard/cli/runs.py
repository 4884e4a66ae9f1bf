"""The pipeline-run commands: ``run`` a DAG on the embedded runtime, and what the ledger
says of runs: ``status``, ``history`` and a run's ``report``."""

from __future__ import annotations

import argparse
import getpass
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from shelfguard.cli import common
from shelfguard.cli.common import EXIT_CODES, OUTCOME_STYLE, UsageError, checked_limit, home_ledger
from shelfguard.config import Settings


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

    ledger = home_ledger(settings)
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
    from shelfguard.airflow.embedded import EmbeddedRunError, run_dag
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
        elif common.console.is_terminal:
            # A live view: the task running now, each finished task above it.
            with common.console.status(f"{dag_id}: starting the embedded Airflow…") as status:

                def on_task(event: TaskEvent) -> None:
                    if event.state == "running":
                        status.update(f"{dag_id}: {event.task_id}")
                    else:
                        common.console.print(ended(event), markup=False, highlight=False)

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
    ledger = home_ledger(settings)
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
    common.out.print(
        f"[bold {style}]{outcome}[/]{where}  run {summary.get('run_id', '?')} ({summary.get('dag_id', '?')})"
    )
    # One line per gate: dbt records a verdict per model task, shown as a count.
    for gate in summary.get("gates", []):
        status = gate["status"]
        mark = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]"}.get(status, "[red]fail[/]")
        count = f"  ({gate['passed']}/{gate['verdicts']} passed)" if gate["verdicts"] > 1 else ""
        if gate["failed_tasks"]:
            count += f"  failed: {', '.join(gate['failed_tasks'])}"
        common.out.print(f"  gate {gate['name']:<20} {mark}{count}")
    approval = summary.get("approval")
    if approval:
        common.out.print(
            f"  approval {approval['decision']} by {approval['decided_by']} via {approval['via']}"
            + (f": {approval['comment']}" if approval["comment"] else "")
        )
    if summary.get("message"):
        common.out.print(f"  {summary['message']}")
    if summary.get("report"):
        common.out.print(f"  report: {summary['report']}")
    common.out.print(f"  log: {summary['log']}" if summary.get("log") else "")


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
        common.out.print_json(json.dumps(summary))
    else:
        print_run(summary)
    return EXIT_CODES.get(outcome, 1)


def status_payload(settings: Settings, limit: int) -> dict[str, Any]:
    """The champion and the recent runs, each with its gates."""
    ledger = home_ledger(settings)
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
    checked_limit(args.limit)
    payload = status_payload(settings, args.limit)
    intact = bool(payload["ledger"]["intact"])
    code = 0 if intact else 1
    if args.json:
        common.out.print_json(json.dumps(payload))
        return code
    if not intact:
        common.out.print(f"[bold red]{_tampered_line(payload['ledger'])}[/]", markup=True)
    champion = payload["champion"]
    if champion:
        common.out.print(
            f"champion v{champion['version']}: model {champion['model']['sha256'][:12]}"
            f" + index {champion['index']['sha256'][:12]} (run {champion['run_id']})"
        )
    else:
        common.out.print("champion: none yet")
    if not payload["runs"]:
        common.out.print(f"no runs recorded in {payload['home']}")
        return code
    table = Table(title="recent runs")
    for column in ("run_id", "dag_id", "outcome", "gates", "finished (UTC)"):
        table.add_column(column, overflow="fold")
    for run in payload["runs"]:
        gates = " ".join(f"{g['name']}:{g['status']}" for g in run["gates"]) or "-"
        outcome = run["outcome"] + (f" ({run['blocked_gate']})" if run["blocked_gate"] else "")
        finished = (run["finished_at"] or "-")[:19].replace("T", " ")
        table.add_row(run["run_id"], run["dag_id"], outcome, gates, finished)
    common.out.print(table)
    return code


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard history``: every version of the champion, and the recent outcomes."""
    checked_limit(args.limit)
    ledger = home_ledger(settings)
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
        common.out.print_json(json.dumps({"champion": moves, "runs": runs}))
        return 0
    if not moves:
        common.out.print("champion: none yet")
    for m in moves:
        common.out.print(
            f"v{m['version']:<3} {m['action']:<8} {m['at'][:16].replace('T', ' ')}  "
            f"model {str(m['model_sha256'])[:12]} + index {str(m['index_sha256'])[:12]}  "
            f"by {m['by']}: {m['reason']}"
        )
    counts: dict[str, int] = {}
    for run in runs:
        counts[run["outcome"]] = counts.get(run["outcome"], 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    common.out.print(f"last {len(runs)} run(s): {summary or 'none'}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.reports import ReportError, build_report, write_report

    ledger = home_ledger(settings)
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
        common.out.print_json(json.dumps(report))
    else:
        common.out.print(f"{report['run']['verdict']}")
        common.out.print(f"report: {path}")
        common.out.print(f"        {path.with_suffix('.json')}")
    return 0
