"""A ledger with something to govern, written through the Ledger API only.

- a ``catalog_refresh`` run BLOCKED at the raw_data gate, with a failed check, its
  sample rows, a Data Docs page and a blocked batch with quarantine by reason;
- a published batch from an earlier, passing ``catalog_refresh`` run;
- two promoted ``search_model_retraining`` runs: the champion at version 2;
- a ``search_model_retraining`` run waiting for approval (triggered by data-engineer),
  every required gate passed for its exact model and index;
- a second waiting run, triggered by governance-owner (who may not approve it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from shelfguard.config import Settings, project_root
from shelfguard.ledger import IngestFileRecord, Ledger
from shelfguard.policy import Policy, parse_policy
from shelfguard.policy_approval import require_in_force

REFRESH = "catalog_refresh"
RETRAIN = "search_model_retraining"
BLOCKED_RUN = f"{REFRESH}/manual__2026-03-02T09:00:00+00:00"
PUBLISHED_RUN = f"{REFRESH}/scheduled__2026-03-01T06:00:00+00:00"
PROMOTED_RUNS = (
    f"{RETRAIN}/asset_triggered__2026-03-01T07:00:00+00:00",
    f"{RETRAIN}/asset_triggered__2026-03-01T08:00:00+00:00",
)
PENDING_RUN = f"{RETRAIN}/manual__2026-03-02T10:00:00+00:00"
OWN_RUN = f"{RETRAIN}/manual__2026-03-02T11:00:00+00:00"
SNAPSHOT = "snap-0001"
FAILED_CHECK = "raw_quarantine_share"
SAMPLE_VALUE = "Bl\\xe4ck Velvet Sofa"


def sha(text: str) -> str:
    """A stand-in content hash."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Seeded:
    """What the tests look for."""

    required_policy: Policy
    dev_policy: Policy
    models: dict[str, str]
    indexes: dict[str, str]


def _policies(ledger: Ledger, settings: Settings) -> tuple[Policy, Policy]:
    """The demo's development policy in force (approver governance-owner), and the policy
    the retraining runs pinned: the same with ``approval.mode: required``."""
    data = (project_root() / "governance.yml").read_bytes()
    dev = parse_policy(data, "governance.yml")
    require_in_force(ledger, dev, data, settings.home)
    required_bytes = data.replace(b"\n  mode: auto\n", b"\n  mode: required\n")
    assert required_bytes != data, "governance.yml no longer says approval.mode: auto"
    required = parse_policy(required_bytes, "governance.yml")
    ledger.pin_policy(required.sha256, required_bytes.decode(), "governance.yml")
    return dev, required


def _refresh_landing(
    ledger: Ledger,
    run_id: str,
    batch_id: str,
    *,
    triggered_by: str,
    policy: Policy,
    content: str,
    size: int,
    quarantine_by_reason: dict[str, int],
) -> None:
    """Start the catalog_refresh run ``run_id`` and land ``batch_id`` in it: one product.csv
    of 2,000 rows (hashed from ``content``, ``size`` bytes), quarantined by reason."""
    rows_read = 2000
    quarantined = sum(quarantine_by_reason.values())
    ledger.start_run(
        run_id,
        REFRESH,
        triggered_by=triggered_by,
        lineage={"policy_sha256": policy.sha256, "batch_id": batch_id},
    )
    ledger.land_batch(
        batch_id,
        [
            {
                "file_name": "product.csv",
                "table": "products",
                "sha256": sha(content),
                "rows_read": rows_read,
                "rows_accepted": rows_read - quarantined,
                "rows_quarantined": quarantined,
            }
        ],
        run_id=run_id,
    )
    ledger.record_ingested_file(
        IngestFileRecord(
            batch_id=batch_id,
            file_name="product.csv",
            table_name="products",
            sha256=sha(content),
            bytes=size,
            rows_read=rows_read,
            rows_accepted=rows_read - quarantined,
            rows_quarantined=quarantined,
            quarantine_by_reason=quarantine_by_reason,
            run_id=run_id,
        )
    )


def _blocked_refresh(ledger: Ledger, settings: Settings, dev: Policy) -> None:
    _refresh_landing(
        ledger,
        PUBLISHED_RUN,
        "batch-0001",
        triggered_by="scheduler",
        policy=dev,
        content="p1",
        size=123_456,
        quarantine_by_reason={"missing_required": 7, "bad_number": 3},
    )
    ledger.record_gate(PUBLISHED_RUN, "raw_data", "pass", subject="batch:batch-0001")
    ledger.set_batch_state("batch-0001", "gated", run_id=PUBLISHED_RUN)
    ledger.record_snapshot(
        SNAPSHOT,
        schema_name="snapshot_0001",
        fingerprint=sha("marts-0001"),
        run_id=PUBLISHED_RUN,
        batch_id="batch-0001",
        tables={"marts.fct_training_pairs": 4200},
    )
    ledger.set_batch_state("batch-0001", "published", run_id=PUBLISHED_RUN, snapshot_id=SNAPSHOT)
    ledger.finish_run(PUBLISHED_RUN, "OK")

    docs = settings.home / "gx" / "data_docs" / "local_site"
    (docs / "validations").mkdir(parents=True, exist_ok=True)
    (docs / "index.html").write_text(
        '<html><body><h1>Data Docs: raw_products</h1><a href="validations/v1.html">run</a></body></html>'
    )
    (docs / "validations" / "v1.html").write_text("<html><body>validation v1</body></html>")
    _refresh_landing(
        ledger,
        BLOCKED_RUN,
        "batch-0002",
        triggered_by="data-engineer",
        policy=dev,
        content="p2",
        size=125_000,
        quarantine_by_reason={"bad_encoding": 80, "missing_required": 4},
    )
    ledger.record_gate(
        BLOCKED_RUN,
        "ingest",
        "pass",
        subject="batch:batch-0002",
        checks=[
            {"name": "rows_accounted_for", "status": "pass", "observed": 2000, "expected": 2000}
        ],
    )
    ledger.record_gate(
        BLOCKED_RUN,
        "raw_data",
        "fail",
        subject="batch:batch-0002",
        checks=[
            {
                "name": FAILED_CHECK,
                "status": "fail",
                "severity": "error",
                "observed": 0.042,
                "expected": "<= 0.01",
                "comment": "a file whose rows mostly fail to parse",
                "unexpected_count": 84,
                "sample_rows": [
                    {
                        "file_name": "product.csv",
                        "line": 17,
                        "reason": "bad_encoding",
                        "raw": SAMPLE_VALUE,
                    },
                    {
                        "file_name": "product.csv",
                        "line": 18,
                        "reason": "bad_encoding",
                        "raw": "Ch\\xe2ir",
                    },
                ],
            },
            {
                "name": "raw_duplicate_id_share",
                "status": "pass",
                "observed": 0.0,
                "expected": "<= 0.01",
            },
        ],
        report_uri=(docs / "index.html").as_uri(),
    )
    ledger.set_batch_state(
        "batch-0002", "blocked", run_id=BLOCKED_RUN, gate="raw_data", reason="raw_data gate failed"
    )
    ledger.finish_run(
        BLOCKED_RUN,
        "BLOCKED",
        blocked_gate="raw_data",
        message=f"raw_data failed: {FAILED_CHECK}",
    )


def _retraining_run(
    ledger: Ledger, policy: Policy, run_id: str, name: str, triggered_by: str
) -> tuple[int, int]:
    """A retraining run whose every required gate passed; returns (model id, index id)."""
    model, index = sha(f"model-{name}"), sha(f"index-{name}")
    ledger.start_run(
        run_id,
        RETRAIN,
        triggered_by=triggered_by,
        lineage={
            "policy_sha256": policy.sha256,
            "data_snapshot_id": SNAPSHOT,
            "snapshot_id": SNAPSHOT,
            "model_sha256": model,
            "index_sha256": index,
        },
    )
    m = ledger.record_artifact(
        "model", f"file:///objects/model/{model}", model, produced_by_run=run_id
    )
    i = ledger.record_artifact(
        "index",
        f"file:///objects/index/{index}",
        index,
        produced_by_run=run_id,
        meta={"model_sha256": model},
    )
    for gate, subject in (
        ("ingest", f"data:{SNAPSHOT}"),
        ("raw_data", f"data:{SNAPSHOT}"),
        ("training_data", f"data:{SNAPSHOT}"),
        ("evaluation", f"model:{model}"),
        ("index", f"index:{index}"),
    ):
        metrics = {}
        if gate == "evaluation":
            metrics = {
                "overall": {
                    "challenger": {"ndcg@10": 0.61, "recall@10": 0.55, "mrr@10": 0.52},
                    "base": {"ndcg@10": 0.48, "recall@10": 0.41, "mrr@10": 0.40},
                }
            }
        ledger.record_gate(
            run_id,
            gate,
            "pass",
            subject=subject,
            checks=[{"name": f"{gate}_holds", "status": "pass"}],
            metrics=metrics,
        )
    return m.id, i.id


def seed(ledger: Ledger, settings: Settings) -> Seeded:
    """Fill ``ledger`` with the runs, batches and champion history described above."""
    dev, required = _policies(ledger, settings)
    _blocked_refresh(ledger, settings, dev)
    models, indexes = {}, {}
    for version, run_id in enumerate(PROMOTED_RUNS, start=1):
        name = f"v{version}"
        model_id, index_id = _retraining_run(ledger, required, run_id, name, "scheduler")
        models[name], indexes[name] = sha(f"model-{name}"), sha(f"index-{name}")
        ledger.record_approval(
            run_id,
            "approved",
            "governance-owner",
            model_sha256=models[name],
            index_sha256=indexes[name],
            via="hitl",
            comment="answered in Airflow",
            policy_sha256=required.sha256,
        )
        ledger.move_alias(
            "champion",
            model_id,
            index_id,
            moved_by="governance-owner",
            reason=f"run {run_id}: every required gate passed",
            run_id=run_id,
            expected_version=version - 1,
        )
        ledger.finish_run(run_id, "PROMOTED")
    for name, run_id, who in (
        ("v3", PENDING_RUN, "data-engineer"),
        ("own", OWN_RUN, "governance-owner"),
    ):
        _retraining_run(ledger, required, run_id, name, who)
        models[name], indexes[name] = sha(f"model-{name}"), sha(f"index-{name}")
    return Seeded(required, dev, models, indexes)


@dataclass(frozen=True)
class Console:
    """The running console and what its ledger holds."""

    root: str  # http://127.0.0.1:PORT
    settings: Settings
    passwords: dict[str, str]
    seeded: Seeded
    log: Path

    @property
    def url(self) -> str:
        """The console's own address."""
        return f"{self.root}/shelfguard/"


def write_seeded_home(settings: Settings) -> Seeded:
    """Seed the ledger of ``settings`` (opened, migrated, then closed again)."""
    from shelfguard.ledger import open_ledger

    ledger = open_ledger(settings.ledger_url)
    try:
        return seed(ledger, settings)
    finally:
        ledger.dispose()
