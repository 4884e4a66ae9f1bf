"""The ledger and governance commands: ``verify`` the chain, ``approve``/``reject`` a
promotion, ``rollback`` the champion, ``policy``, ``keys``, ``batches`` (and purging one)
and ``gc`` of stored objects. None of them needs Airflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from shelfguard.cli import common
from shelfguard.cli.common import TamperedError, UsageError, checked_limit, home_ledger
from shelfguard.config import Settings
from shelfguard.failpoints import failpoint


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check the ledger's hash chain: exit 0 when intact, 1 naming the first bad row."""
    ledger = home_ledger(settings)
    try:
        report = ledger.verify()
    finally:
        ledger.dispose()
    if args.json:
        common.out.print_json(json.dumps(report.to_dict()))
    elif report.ok:
        head = f" (head {report.head[:12]})" if report.head else ""
        common.out.print(f"OK: the ledger verifies, {report.entries} chain entries{head}")
    else:
        more = len(report.problems) - 1
        common.out.print(
            f"TAMPERED: {report.first}" + (f" (and {more} more)" if more > 0 else ""),
            markup=False,
        )
        for problem in report.problems[1:]:
            common.out.print(f"  also: {problem}", markup=False)
    return 0 if report.ok else 1


def _awaiting(ledger: Any, run_id: str) -> str:
    """``latest`` → the newest run that waits for a decision; other ids pass through."""
    if run_id != "latest":
        return run_id
    for run in ledger.recent_runs(limit=50):
        if run.outcome == "RUNNING" and run.lineage.get("index_sha256"):
            return str(run.run_id)
    raise UsageError("no run is waiting for approval (see `shelfguard status`)")


def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.model.approval import ApprovalError, record_decision
    from shelfguard.policy import PolicyError
    from shelfguard.run_context import RunContext, RunContextError

    if settings.approval_backend == "hitl":
        raise UsageError(
            "SHELFGUARD_APPROVAL_BACKEND=hitl: answer the approval in Airflow "
            "(Required Actions in the UI, or its REST API)"
        )
    decision = "approved" if args.command == "approve" else "rejected"
    signer = _signer(args.by)
    ledger = home_ledger(settings)
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
    common.out.print(
        f"{record.decision} run {record.run_id}: model {record.model_sha256[:12]} + index "
        f"{record.index_sha256[:12]} by {record.decided_by} (signed)"
    )
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


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.model.promotion import PromotionRefused, rollback

    signer = _signer(args.by)
    ledger = home_ledger(settings)
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
    common.out.print(
        f"champion is now v{alias.version}: model {alias.model.sha256[:12]} + index "
        f"{alias.index.sha256[:12]} (from run {alias.run_id})"
    )
    return 0


def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard policy approve [FILE] --by NAME`` / ``shelfguard policy show``."""
    from shelfguard.ledger import PolicyApprovalRecord
    from shelfguard.policy import PolicyError
    from shelfguard.policy_approval import PolicyApprovalError, approve, in_force

    ledger = home_ledger(settings)
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
            common.out.print_json(json.dumps({"in_force": None}))
            return 0
        common.out.print("no policy is in force yet (`shelfguard policy approve FILE --by NAME`)")
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
        common.out.print_json(json.dumps(payload))
        return 0
    common.out.print(
        f"policy in force: {record.policy_sha256[:12]} ({current.policy.path}), approved by "
        f"{record.approved_by} ({record.via}) at {record.approved_at:%Y-%m-%d %H:%M}Z"
    )
    for entry in approvers:
        common.out.print(f"  approver {entry['name']}: {entry['key'] or 'no key (Airflow only)'}")
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard keys new NAME`` / ``shelfguard keys show NAME``."""
    from shelfguard.signing import SigningError, new_key, public_key_of

    try:
        if args.action == "new":
            path, public = new_key(args.name, force=args.force)
            common.console.print(f"private key: {path} (mode 600: keep it to yourself)")
        else:
            public = public_key_of(args.name)
    except SigningError as exc:
        raise UsageError(str(exc)) from exc
    common.out.print(public)
    if args.action == "new":
        common.console.print(
            "a governance owner lists it in governance.yml, then puts that policy in force:\n"
            f"  approval:\n    approvers:\n      - name: {args.name}\n        key: {public}\n"
            "  shelfguard policy approve governance.yml --by OWNER"
        )
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
    checked_limit(args.limit)
    ledger = home_ledger(settings)
    try:
        batches = ledger.batches(limit=args.limit, state=args.state)
    except LedgerError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()
    if args.json:
        common.out.print_json(json.dumps([_batch_summary(b) for b in batches]))
        return 0
    if not batches:
        common.out.print("no batches yet: `shelfguard run catalog_refresh --source DIR` lands one")
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
    common.out.print(table)
    return 0


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.data.publication import PublicationError, purge
    from shelfguard.ledger import LedgerError

    signer = _signer(args.by)
    ledger = home_ledger(settings)
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
        common.out.print_json(json.dumps(payload))
        return 0
    common.out.print(f"purged batch {record.batch_id}: {record.reason}")
    for f in files:
        what = f.kept_because or f"{f.raw_rows} raw + {f.quarantined_rows} quarantined rows deleted"
        common.out.print(f"  raw.{f.table} {f.sha256[:12]}: {what}")
    return 0


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard gc [--dry-run] [--keep-days N]``: remove stored objects nothing needs."""
    from shelfguard.model.objects import collect

    if not 0 <= args.keep_days <= 36500:
        raise UsageError("--keep-days must be between 0 and 36500")
    ledger = home_ledger(settings)
    try:
        found = collect(settings, ledger, keep_days=args.keep_days, dry_run=args.dry_run)
    finally:
        ledger.dispose()
    if args.json:
        common.out.print_json(json.dumps({"dry_run": args.dry_run, **vars(found)}))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    total = sum(r["bytes"] for r in found.removed)
    common.out.print(
        f"{verb} {len(found.removed)} stored object(s), {total / 1e6:.1f} MB; kept {found.kept}"
    )
    for r in found.removed:
        common.out.print(f"  {r['kind']} {r['sha256'][:16]}  {r['bytes'] / 1e6:.1f} MB")
    if found.partials:
        common.out.print(
            f"{verb} {len(found.partials)} partial copy(ies) an interrupted store left"
        )
    return 0
