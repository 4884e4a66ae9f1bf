"""OpenLineage datasets, facets and events for shelfguard's runs.

Pure builders: each function turns what a task already knows (file hashes, the
warehouse it wrote to, gate outcomes, the model and index hashes) into
OpenLineage objects named as the OpenLineage naming spec asks, so the same
datasets line up with the ones the Airflow provider and Cosmos emit for dbt:

* DuckDB tables: namespace ``duckdb://<file path>``, name ``<database>.<schema>.<table>``
  (the database is the file's stem, as dbt-duckdb names it);
* PostgreSQL tables: namespace ``postgres://<host>:<port>``, name
  ``<database>.<schema>.<table>``;
* local files: namespace ``file``, name the absolute path; objects:
  namespace ``s3://<bucket>``, name the key;
* the model and the index: namespace ``shelfguard://models`` /
  ``shelfguard://indexes``, name the sha256 of the artefact.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload
from urllib.parse import urlsplit

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.generated.base import RunFacet
from openlineage.client.generated.data_quality_assertions_dataset import (
    Assertion,
    DataQualityAssertionsDatasetFacet,
)
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
from openlineage.client.transport.file import FileConfig, FileTransport

from shelfguard.data.publication import builds_candidate
from shelfguard.lineage import OPENLINEAGE_NAMESPACE, openlineage_file_path

if TYPE_CHECKING:
    from shelfguard.config import Settings
    from shelfguard.ledger import Ledger


class GateLike(Protocol):
    """A gate verdict: a :class:`~shelfguard.gates.GateOutcome` or a ledger gate record."""

    @property
    def gate(self) -> str: ...

    @property
    def checks(self) -> list[dict[str, Any]]: ...


log = logging.getLogger(__name__)

JOB_NAMESPACE = OPENLINEAGE_NAMESPACE
#: Producer URI stamped on every event and facet shelfguard builds.
PRODUCER = "https://github.com/shelfguard/shelfguard/tree/main/plugins/shelfguard"
#: Where shelfguard's custom facet schemas live (the project's own namespace).
SCHEMA_BASE = "https://github.com/shelfguard/shelfguard/blob/main/docs/lineage.md"

MODEL_NAMESPACE = "shelfguard://models"
INDEX_NAMESPACE = "shelfguard://indexes"


@attr.define
class ShelfguardOutcomeRunFacet(RunFacet):
    """How a shelfguard run ended: ``published``, ``promoted``, ``blocked``, ... and why."""

    outcome: str
    reason: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}#shelfguardoutcomerunfacet"


@attr.define
class ShelfguardUpstreamRunFacet(RunFacet):
    """The published snapshot a model run trained on, the ``catalog_refresh`` run that
    published it and the batches that run ingested."""

    snapshot_id: str
    catalog_refresh_run: str | None = attr.field(default=None)
    batches: list[str] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}#shelfguardupstreamrunfacet"


@attr.define
class ShelfguardApprovalRunFacet(RunFacet):
    """Who approved (or rejected) a model run's promotion, and when."""

    decision: str
    approver: str | None = attr.field(default=None)
    decided_at: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA_BASE}#shelfguardapprovalrunfacet"


def _version(sha256: str | None) -> dict[str, Any]:
    if not sha256:
        return {}
    return {"version": DatasetVersionDatasetFacet(datasetVersion=sha256, producer=PRODUCER)}


def file_dataset(location: str | Path, sha256: str | None = None) -> InputDataset:
    """An ingested file: ``file`` + absolute path, or ``s3://bucket`` + key; its hash as version."""
    text = str(location)
    parts = urlsplit(text)
    if parts.scheme in ("s3", "gs", "gcs"):
        scheme = "gs" if parts.scheme == "gcs" else parts.scheme
        namespace, name = f"{scheme}://{parts.netloc}", parts.path.lstrip("/")
    else:
        path = parts.path if parts.scheme == "file" else text
        namespace, name = "file", str(Path(path).resolve())
    return InputDataset(namespace=namespace, name=name, facets=_version(sha256))


def warehouse_namespace(warehouse_url: str) -> tuple[str, str]:
    """The OpenLineage namespace of a warehouse URL and the database its tables live in."""
    parts = urlsplit(warehouse_url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "duckdb":
        # SQLAlchemy form: ``duckdb:///relative`` or ``duckdb:////absolute``.
        path = Path(warehouse_url.split(":///", 1)[-1].split("?", 1)[0]).resolve()
        return f"duckdb://{path}", path.stem
    if scheme in ("postgres", "postgresql"):
        return f"postgres://{parts.hostname}:{parts.port or 5432}", parts.path.lstrip("/")
    raise ValueError(f"no OpenLineage naming for warehouse {scheme!r}")


def table_name(warehouse_url: str, schema: str, table: str) -> tuple[str, str]:
    """``(namespace, database.schema.table)`` for a warehouse table."""
    namespace, database = warehouse_namespace(warehouse_url)
    return namespace, f"{database}.{schema}.{table}"


@overload
def table_dataset(
    warehouse_url: str,
    schema: str,
    table: str,
    *,
    output: Literal[False] = False,
    gate: GateLike | None = None,
    version: str | None = None,
) -> InputDataset: ...


@overload
def table_dataset(
    warehouse_url: str,
    schema: str,
    table: str,
    *,
    output: Literal[True],
    gate: GateLike | None = None,
    version: str | None = None,
) -> OutputDataset: ...


def table_dataset(
    warehouse_url: str,
    schema: str,
    table: str,
    *,
    output: bool = False,
    gate: GateLike | None = None,
    version: str | None = None,
) -> InputDataset | OutputDataset:
    """A warehouse table as an input or output, with a gate's assertions when it guarded it."""
    namespace, name = table_name(warehouse_url, schema, table)
    facets: dict[str, Any] = _version(version)
    if gate is not None:
        facets["dataQualityAssertions"] = assertions_facet(gate)
    if output:
        return OutputDataset(namespace=namespace, name=name, facets=facets)
    return InputDataset(namespace=namespace, name=name, facets=facets)


@overload
def model_dataset(sha256: str, *, output: Literal[True] = True) -> OutputDataset: ...


@overload
def model_dataset(sha256: str, *, output: Literal[False]) -> InputDataset: ...


def model_dataset(sha256: str, *, output: bool = True) -> InputDataset | OutputDataset:
    """The fine-tuned model, named by the sha256 of its weights."""
    cls = OutputDataset if output else InputDataset
    return cls(namespace=MODEL_NAMESPACE, name=sha256, facets=_version(sha256))


def index_dataset(sha256: str) -> OutputDataset:
    """The catalog's embedding index, named by its sha256."""
    return OutputDataset(namespace=INDEX_NAMESPACE, name=sha256, facets=_version(sha256))


def assertions_facet(gate: GateLike) -> DataQualityAssertionsDatasetFacet:
    """One assertion per gate check: it succeeded unless its status is ``fail`` or ``warn``."""
    assertions = [
        Assertion(
            assertion=str(check["name"]),
            success=check.get("status") not in ("fail", "warn"),
            column=check.get("column"),
            severity=check.get("severity"),
            name=gate.gate,
        )
        for check in gate.checks
        if check.get("status") != "skip"
    ]
    return DataQualityAssertionsDatasetFacet(assertions=assertions, producer=PRODUCER)


def run_uuid(ledger_run_id: str) -> str:
    """A stable OpenLineage run id (UUID) for a ledger run id: re-emitting does not fork it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"shelfguard:{ledger_run_id}"))


def run_event(
    job_name: str,
    ledger_run_id: str,
    *,
    inputs: Sequence[InputDataset] = (),
    outputs: Sequence[OutputDataset] = (),
    run_facets: Mapping[str, RunFacet] | None = None,
    state: RunState = RunState.COMPLETE,
    event_time: datetime | None = None,
) -> RunEvent:
    """A run event for one shelfguard job (``<dag_id>.<task_id>``) keyed on its ledger run."""
    return RunEvent(
        eventType=state,
        eventTime=(event_time or datetime.now(UTC)).isoformat(),
        run=Run(runId=run_uuid(ledger_run_id), facets=dict(run_facets or {})),
        job=Job(namespace=JOB_NAMESPACE, name=job_name),
        inputs=list(inputs),
        outputs=list(outputs),
        producer=PRODUCER,
    )


def file_client(home: Path) -> OpenLineageClient:
    """A client writing one JSON file per event under ``<home>/lineage/`` (embedded mode)."""
    path = openlineage_file_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = FileConfig(log_file_path=str(path), append=False)
    return OpenLineageClient(transport=FileTransport(config))


def emit(client: OpenLineageClient, events: Iterable[RunEvent]) -> None:
    """Send events in order."""
    for event in events:
        client.emit(event)


#: The marts a ``catalog_refresh`` run publishes and a retraining run reads.
MART_TABLES = ("dim_products", "fct_training_pairs", "fct_golden_judgements")


def run_events(settings: Settings, ledger: Ledger, run_id: str) -> list[RunEvent]:
    """The events that describe a finished run, built from what the ledger recorded.

    ``catalog_refresh``: one event, landed files (by sha256) in, the marts out; the
    ``raw_data`` gate's assertions on each file. A retraining run: ``<dag>.train``
    (the pinned snapshot's marts in, the model out, ``training_data`` assertions on
    ``fct_training_pairs``) and ``<dag>.embed_catalog`` (the model and
    ``dim_products`` in, the index out, the remaining gates on the model). Both carry
    the outcome; the model run also its approval and its upstream refresh run.
    """
    run = ledger.get_run(run_id)
    if run is None:
        return []
    gates = ledger.gate_results(run_id)
    facets: dict[str, RunFacet] = {
        "shelfguard_outcome": ShelfguardOutcomeRunFacet(
            outcome=run.outcome, reason=run.message, producer=PRODUCER
        )
    }
    decisions = ledger.approvals(run_id)
    if decisions:
        latest = decisions[-1]
        facets["shelfguard_approval"] = ShelfguardApprovalRunFacet(
            decision=latest.decision,
            approver=latest.decided_by,
            decided_at=latest.decided_at.isoformat(),
            producer=PRODUCER,
        )
    warehouse = settings.warehouse_url
    by_gate = {g.gate: g for g in gates}
    if builds_candidate(run.lineage):
        landing = [g for g in gates if g.gate != "dbt"]
        inputs = []
        for record in ledger.ingested_files(run_id=run_id):
            dataset = file_dataset(settings.landing_dir / record.file_name, record.sha256)
            if landing:
                merged: dict[str, Any] = {**(dataset.facets or {})}
                merged["dataQualityAssertions"] = _merged(landing)
                dataset.facets = merged
            inputs.append(dataset)
        snapshot_id = run.lineage.get("published_snapshot")
        snapshot = ledger.get_snapshot(str(snapshot_id)) if snapshot_id else None
        dbt = {g.subject: g for g in gates if g.gate == "dbt"}
        outputs = (
            [
                table_dataset(
                    warehouse,
                    snapshot.schema_name,
                    t,
                    output=True,
                    gate=dbt.get(t),
                    version=snapshot.fingerprint,
                )
                for t in MART_TABLES
            ]
            if snapshot
            else []
        )
        return [run_event(run.dag_id, run_id, inputs=inputs, outputs=outputs, run_facets=facets)]

    snapshot_id = run.lineage.get("snapshot_id")
    snapshot = ledger.get_snapshot(str(snapshot_id)) if snapshot_id else None
    schema = snapshot.schema_name if snapshot else str(run.lineage.get("marts_schema") or "marts")
    version = snapshot.fingerprint if snapshot else None
    if snapshot is not None:
        batches = [snapshot.batch_id] if snapshot.batch_id else []
        facets["shelfguard_upstream"] = ShelfguardUpstreamRunFacet(
            snapshot_id=snapshot.snapshot_id,
            catalog_refresh_run=snapshot.run_id,
            batches=batches,
            producer=PRODUCER,
        )
    produced = {
        a.kind: a for a in ledger.artifacts(("model", "index")) if a.produced_by_run == run_id
    }
    marts = [
        table_dataset(
            warehouse,
            schema,
            t,
            gate=by_gate.get("training_data") if t == "fct_training_pairs" else None,
            version=version,
        )
        for t in MART_TABLES
    ]
    events = []
    model = produced.get("model")
    if model is not None:
        events.append(
            run_event(
                f"{run.dag_id}.train",
                run_id,
                inputs=marts,
                outputs=[model_dataset(model.sha256)],
                run_facets=facets,
            )
        )
    index = produced.get("index")
    if index is not None:
        model_sha = model.sha256 if model else str(index.meta.get("model_sha256") or "")
        rest = [g for g in gates if g.gate not in ("raw_data", "training_data")]
        embed_inputs: list[InputDataset] = []
        if model_sha:
            model_in = model_dataset(model_sha, output=False)
            if rest:
                with_gates: dict[str, Any] = {**(model_in.facets or {})}
                with_gates["dataQualityAssertions"] = _merged(rest)
                model_in.facets = with_gates
            embed_inputs.append(model_in)
        embed_inputs.append(table_dataset(warehouse, schema, "dim_products", version=version))
        events.append(
            run_event(
                f"{run.dag_id}.embed_catalog",
                run_id,
                inputs=embed_inputs,
                outputs=[index_dataset(index.sha256)],
                run_facets=facets,
            )
        )
    return events


def _merged(gates: Sequence[GateLike]) -> DataQualityAssertionsDatasetFacet:
    """Several gates on one dataset: their assertions together, each named by its gate."""
    assertions = [a for g in gates for a in assertions_facet(g).assertions]
    return DataQualityAssertionsDatasetFacet(assertions=assertions, producer=PRODUCER)


def configured_client(env: Mapping[str, str] | None = None) -> OpenLineageClient | None:
    """The client the deployment configured, or ``None`` when lineage is off.

    The provider's ``AIRFLOW__OPENLINEAGE__TRANSPORT`` (set by the embedded runner and by
    compose) wins; else the client's own ``OPENLINEAGE_URL`` / ``OPENLINEAGE_CONFIG``.
    """
    env = os.environ if env is None else env
    if env.get("AIRFLOW__OPENLINEAGE__DISABLED", "").lower() == "true":
        return None
    transport = env.get("AIRFLOW__OPENLINEAGE__TRANSPORT")
    if transport:
        config = json.loads(transport)
        if config.get("type") == "file" and "://" not in str(config.get("log_file_path", "")):
            Path(config["log_file_path"]).parent.mkdir(parents=True, exist_ok=True)
        return OpenLineageClient(config={"transport": config})
    if env.get("OPENLINEAGE_URL") or env.get("OPENLINEAGE_CONFIG"):
        return OpenLineageClient()
    return None


def emit_run_lineage(settings: Settings, ledger: Ledger, run_id: str) -> int:
    """Emit a finished run's events to the configured transport; how many were sent.

    Lineage is reporting, not a gate: a transport that fails is logged, never raised.
    """
    try:
        client = configured_client()
        if client is None:
            return 0
        events = run_events(settings, ledger, run_id)
        emit(client, events)
    except Exception:
        log.warning("could not emit OpenLineage events for %s", run_id, exc_info=True)
        return 0
    return len(events)
