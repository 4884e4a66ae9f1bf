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

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
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

from shelfguard.gates import GateOutcome
from shelfguard.lineage import OPENLINEAGE_NAMESPACE, openlineage_file_path

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


def table_dataset(
    warehouse_url: str,
    schema: str,
    table: str,
    *,
    output: bool = False,
    gate: GateOutcome | None = None,
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


def model_dataset(sha256: str, *, output: bool = True) -> InputDataset | OutputDataset:
    """The fine-tuned model, named by the sha256 of its weights."""
    cls = OutputDataset if output else InputDataset
    return cls(namespace=MODEL_NAMESPACE, name=sha256, facets=_version(sha256))


def index_dataset(sha256: str) -> OutputDataset:
    """The catalog's embedding index, named by its sha256."""
    return OutputDataset(namespace=INDEX_NAMESPACE, name=sha256, facets=_version(sha256))


def assertions_facet(gate: GateOutcome) -> DataQualityAssertionsDatasetFacet:
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
