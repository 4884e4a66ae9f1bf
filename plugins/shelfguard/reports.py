"""Governance reports: one HTML page and one JSON document per run, built from the ledger.

Written for a person deciding whether to trust the data (and later the model):
the outcome first, then why, then the evidence — inputs with their hashes and
quarantine counts, every gate with its checks, sample offending rows for each
failure, dbt test results, and what the run was built from.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from shelfguard.config import Settings
from shelfguard.data.publication import builds_candidate
from shelfguard.ledger import GateRecord, Ledger


class ReportError(LookupError):
    """The run is not in the ledger."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _gate_json(gate: GateRecord) -> dict[str, Any]:
    checks = [dict(c) for c in gate.checks]
    return {
        "gate": gate.gate,
        "subject": gate.subject,
        "status": gate.status,
        "report_uri": gate.report_uri,
        "recorded_at": gate.created_at,
        "failed_checks": [c.get("name") for c in checks if c.get("status") == "fail"],
        "checks": checks,
        "metrics": gate.metrics,
    }


def build_report(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """Everything the ledger knows about one run, as a JSON-ready document."""
    run = ledger.get_run(run_id)
    if run is None:
        known = ", ".join(r.run_id for r in ledger.recent_runs(limit=5)) or "none"
        raise ReportError(f"no run {run_id!r} in the ledger (recent runs: {known})")
    batch_id = run.lineage.get("batch_id")
    inputs = [asdict(f) for f in ledger.ingested_files(batch_id=batch_id)] if batch_id else []
    batch = ledger.get_batch(str(batch_id)) if batch_id else None
    policy_sha = str(run.lineage.get("policy_sha256") or "")
    pinned = ledger.policy_content(policy_sha) if policy_sha else None
    snapshot_id = run.lineage.get("published_snapshot") or run.lineage.get("snapshot_id")
    snapshot = ledger.get_snapshot(str(snapshot_id)) if snapshot_id else None
    upstream = None
    if snapshot is not None and snapshot.run_id and snapshot.run_id != run.run_id:
        # A model run reads a snapshot another (catalog_refresh) run published: its inputs
        # are the batch that run ingested (also in its OpenLineage events).
        upstream = {
            "snapshot_id": snapshot.snapshot_id,
            "catalog_refresh_run": snapshot.run_id,
            "batches": [snapshot.batch_id] if snapshot.batch_id else [],
        }
        if not inputs and snapshot.batch_id:
            inputs = [asdict(f) for f in ledger.ingested_files(batch_id=snapshot.batch_id)]
    gates = [_gate_json(g) for g in ledger.gate_results(run_id)]
    outcome = run.outcome
    if outcome == "BLOCKED":
        verdict = (
            f"BLOCKED at gate {run.blocked_gate}: {run.message or 'see the failed checks below'}"
        )
    elif outcome == "FAILED":
        verdict = f"FAILED: {run.message or 'a task failed; see the Airflow log'}"
    elif outcome == "REJECTED":
        verdict = f"REJECTED at approval: {run.message or 'see the decisions below'}"
    elif outcome == "RUNNING":
        verdict = "RUNNING: the run has not finished; this report is partial"
    else:
        verdict = f"{outcome}: every gate on the way passed"
    report: dict[str, Any] = _jsonable(
        {
            "run": {
                "run_id": run.run_id,
                "dag_id": run.dag_id,
                "outcome": outcome,
                "blocked_gate": run.blocked_gate,
                "message": run.message,
                "verdict": verdict,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "triggered_by": run.triggered_by,
                "builds_candidate": builds_candidate(run.lineage),
            },
            "lineage": run.lineage,
            "inputs": inputs,
            "upstream": upstream,
            "gates": [g for g in gates if g["gate"] != "dbt"],
            "dbt": [g for g in gates if g["gate"] == "dbt"],
            "approvals": [asdict(a) for a in ledger.approvals(run_id)],
            "policy": {
                "sha256": policy_sha or None,
                "source": pinned[1] if pinned else None,
                "content": pinned[0] if pinned else None,
                "pinned": pinned is not None,
            },
            "batch": asdict(batch) if batch else None,
            "snapshot": asdict(snapshot) if snapshot else None,
            "generated_at": datetime.now(UTC),
        }
    )
    return report


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>shelfguard report {{ r.run.run_id }}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#1d2329;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}
.OK,.PROMOTED,.pass{background:#1a7f37}.BLOCKED,.FAILED,.fail{background:#cf222e}
.REJECTED,.warn,.RUNNING{background:#9a6700}
.verdict{font-size:1.1rem;margin:.8rem 0;padding:.8rem;border-left:.3rem solid #888;background:#f6f8fa}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f6f8fa} code{font-size:.85rem;word-break:break-all}
.muted{color:#57606a} tr.failrow td{background:#ffebe9}
</style></head><body>
<h1>Governance report — {{ r.run.dag_id }}</h1>
<div class="muted">run <code>{{ r.run.run_id }}</code> · started {{ r.run.started_at }} · finished {{ r.run.finished_at or "—" }}{% if r.run.triggered_by %} · triggered by {{ r.run.triggered_by }}{% endif %}</div>
<p><span class="badge {{ r.run.outcome }}">{{ r.run.outcome }}</span></p>
<div class="verdict">{{ r.run.verdict }}</div>

{% macro check_row(g, c) %}<tr class="{{ 'failrow' if c.status == 'fail' else '' }}"><td>{{ g.gate }}</td><td><code>{{ c.name }}</code></td>
<td>{{ c.status }}</td><td>{{ c.severity or "error" }}</td><td>{{ c.observed if c.observed is not none else "" }}</td>
<td>{{ c.expected if c.expected is not none else "" }}</td><td>{{ c.comment or c.message or "" }}</td></tr>
{% if c.status != 'pass' and c.sample_rows %}<tr><td colspan="7"><b>Sample offending rows ({{ c.unexpected_count if c.unexpected_count is not none else c.sample_rows | length }} in all)</b>
<table><tr>{% for k in c.sample_rows[0].keys() %}<th>{{ k }}</th>{% endfor %}</tr>
{% for row in c.sample_rows %}<tr>{% for v in row.values() %}<td><code>{{ v }}</code></td>{% endfor %}</tr>{% endfor %}
</table></td></tr>{% endif %}{% endmacro %}
{% set check_head %}<tr><th>gate</th><th>check</th><th>status</th><th>severity</th><th>observed</th><th>expected</th><th>what it catches</th></tr>{% endset %}
{% set failing = [] %}{% for g in r.gates %}{% for c in g.checks if c.status != 'pass' %}{% set _ = failing.append((g, c)) %}{% endfor %}{% endfor %}
{% if failing %}<h2>Failed checks</h2>
<table>{{ check_head }}{% for g, c in failing %}{{ check_row(g, c) }}{% endfor %}</table>{% endif %}

<h2>Gates</h2>
{% if not r.gates %}<p class="muted">No gate has recorded a result for this run.</p>{% else %}
<table><tr><th>gate</th><th>status</th><th>subject</th><th>failed checks</th><th>details</th></tr>
{% for g in r.gates %}<tr class="{{ 'failrow' if g.status == 'fail' else '' }}"><td>{{ g.gate }}</td>
<td><span class="badge {{ g.status }}">{{ g.status }}</span></td><td><code>{{ g.subject }}</code></td>
<td>{{ g.failed_checks | join(", ") or "—" }}</td>
<td>{% if g.report_uri %}<a href="{{ g.report_uri }}">validation details</a>{% endif %}</td></tr>{% endfor %}
</table>{% endif %}
{% set passing = [] %}{% for g in r.gates %}{% for c in g.checks if c.status == 'pass' %}{% set _ = passing.append((g, c)) %}{% endfor %}{% endfor %}
{% if passing %}<details><summary>{{ passing | length }} passing checks</summary>
<table>{{ check_head }}{% for g, c in passing %}{{ check_row(g, c) }}{% endfor %}</table></details>{% endif %}

{% for g in r.gates if g.gate == "evaluation" %}
<h2>Model evaluation on the golden set</h2>
<p class="muted">Every golden query ranks the whole active catalog. nDCG uses the judgements
(Exact, Partial, Irrelevant); recall and MRR count Exact products.</p>
{% set overall = g.metrics.overall %}{% set names = overall | list %}
{% set metric_names = overall[names[0]] | list if names else [] %}
<table><tr><th>model</th>{% for m in metric_names %}<th>{{ m }}</th>{% endfor %}</tr>
{% for name in ["challenger", "champion", "base", "bm25"] if name in overall %}<tr><td><b>{{ name }}</b></td>
{% for m in metric_names %}{% set v = overall[name][m] %}<td>{{ "{:,}".format(v | int) if m.startswith("n_") and v is number else "%.4f" | format(v) if v is number else v }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% set slices = g.metrics.slices.challenger if g.metrics.slices and g.metrics.slices.challenger else {} %}
{% if slices %}<details><summary>Per product-class slice (challenger)</summary>
<table><tr><th>class</th><th>golden queries</th><th>nDCG@10</th>{% for ref in ["champion", "base", "bm25"] if ref in g.metrics.slices %}<th>{{ ref }} nDCG@10</th>{% endfor %}</tr>
{% for cls, sm in slices | dictsort %}<tr><td>{{ cls }}</td><td>{{ sm.n_queries | int }}</td><td>{{ "%.4f" | format(sm["ndcg@10"]) }}</td>
{% for ref in ["champion", "base", "bm25"] if ref in g.metrics.slices %}<td>{{ "%.4f" | format(g.metrics.slices[ref][cls]["ndcg@10"]) if cls in g.metrics.slices[ref] else "" }}</td>{% endfor %}</tr>{% endfor %}
</table></details>{% endif %}
{% endfor %}
{% if r.approvals or r.lineage.promoted_version or r.lineage.promotion_refused %}
<h2>Approval and promotion</h2>
{% if r.approvals %}<table><tr><th>decision</th><th>by</th><th>via</th><th>when</th><th>model</th><th>index</th><th>comment</th></tr>
{% for a in r.approvals %}<tr class="{{ 'failrow' if a.decision == 'rejected' else '' }}"><td>{{ a.decision }}</td><td>{{ a.decided_by }}</td><td>{{ a.via }}</td><td>{{ a.decided_at }}</td>
<td><code>{{ a.model_sha256[:12] }}</code></td><td><code>{{ a.index_sha256[:12] }}</code></td><td>{{ a.comment }}</td></tr>{% endfor %}</table>{% endif %}
{% if r.lineage.promoted_version %}<p>The <b>champion</b> alias moved to version {{ r.lineage.promoted_version }}: this run's model and index, in one transaction.</p>{% endif %}
{% if r.lineage.promotion_refused %}<p><b>Promotion refused</b>, the ledger lacks:</p><ul>{% for m in r.lineage.promotion_refused %}<li>{{ m }}</li>{% endfor %}</ul>{% endif %}
{% endif %}

<h2>Inputs</h2>
{% if r.upstream %}<p>Trained on snapshot <code>{{ r.upstream.snapshot_id }}</code>, published by catalog_refresh run <code>{{ r.upstream.catalog_refresh_run or "-" }}</code> from batch(es) {% for b in r.upstream.batches %}<code>{{ b }}</code> {% else %}-{% endfor %}: the files below are that batch's.</p>{% endif %}
{% if not r.inputs %}<p class="muted">No ingested files are linked to this run.</p>{% else %}
<table><tr><th>file</th><th>table</th><th>sha256</th><th>bytes</th><th>rows read</th><th>accepted</th><th>quarantined</th><th>by reason</th><th>extra columns</th></tr>
{% for f in r.inputs %}<tr><td>{{ f.file_name }}</td><td>{{ f.table_name }}</td><td><code>{{ f.sha256 }}</code></td>
<td>{{ "{:,}".format(f.bytes) }}</td><td>{{ "{:,}".format(f.rows_read) }}</td><td>{{ "{:,}".format(f.rows_accepted) }}</td>
<td>{{ "{:,}".format(f.rows_quarantined) }}</td>
<td>{% for k, v in f.quarantine_by_reason.items() %}{{ k }}: {{ v }}<br>{% endfor %}</td>
<td>{{ f.extra_columns | join(", ") }}</td></tr>{% endfor %}</table>
<p class="muted">Every row read is either accepted or quarantined with a reason and its original bytes
(tables <code>quarantine.*</code> in the warehouse).</p>{% endif %}

<h2>Data: batch and published snapshot</h2>
{% if r.batch %}<p>Batch <code>{{ r.batch.batch_id }}</code> is <span class="badge {{ 'pass' if r.batch.state == 'published' else 'fail' if r.batch.state in ('blocked', 'purged') else 'warn' }}">{{ r.batch.state }}</span>{% if r.batch.gate %} (blocked by gate {{ r.batch.gate }}){% endif %}.
{% if r.batch.state == 'blocked' %}Its rows stay in <code>raw.*</code> as evidence and are never read downstream.{% endif %}</p>{% endif %}
{% if r.snapshot %}<p>{{ "Published" if r.run.builds_candidate else "Read" }} snapshot <code>{{ r.snapshot.snapshot_id }}</code>
(schema <code>{{ r.snapshot.schema_name }}</code>, fingerprint <code>{{ r.snapshot.fingerprint }}</code>, published {{ r.snapshot.published_at }}).</p>
{% elif r.run.builds_candidate %}<p class="muted">Nothing was published: the marts are exactly as they were before this run.</p>{% endif %}

<h2>Policy</h2>
{% if r.policy.pinned %}<p>Pinned when the run started, from <code>{{ r.policy.source }}</code>, sha256 <code>{{ r.policy.sha256 }}</code>; every task of the run used these bytes.</p>
<details><summary>The policy as pinned</summary><pre>{{ r.policy.content }}</pre></details>
{% else %}<p class="muted">The run pinned no policy{% if r.policy.sha256 %} (recorded sha256 <code>{{ r.policy.sha256 }}</code>){% endif %}.</p>{% endif %}

<h2>dbt models and tests</h2>
{% if not r.dbt %}<p class="muted">dbt did not run in this run.</p>{% else %}
<table><tr><th>node</th><th>status</th><th>message</th></tr>
{% for g in r.dbt %}{% for c in g.checks %}<tr class="{{ 'failrow' if c.status == 'fail' else '' }}"><td><code>{{ c.name }}</code></td><td>{{ c.status }}</td><td>{{ c.message or "" }}</td></tr>{% endfor %}{% endfor %}
</table>{% endif %}


<h2>What this run was built from</h2>
<table>{% for k, v in r.lineage.items() %}<tr><th>{{ k }}</th><td><code>{{ v | tojson if v is mapping or (v is iterable and v is not string) else v }}</code></td></tr>{% endfor %}</table>
<p class="muted">Generated {{ r.generated_at }} from the governance ledger.</p>
</body></html>
"""


def report_path(settings: Settings, run_id: str) -> Path:
    """Where a run's HTML report is written by default."""
    return settings.reports_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", run_id) / "report.html"


def write_report(
    settings: Settings, ledger: Ledger, run_id: str, out_dir: Path | None = None
) -> Path:
    """Write ``report.html`` and ``report.json`` for a run; returns the HTML path."""
    report = build_report(ledger, run_id)
    target = out_dir or report_path(settings, run_id).parent
    target.mkdir(parents=True, exist_ok=True)
    (target / "report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(_TEMPLATE).render(r=report)
    path = target / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
