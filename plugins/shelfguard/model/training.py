"""The model half of a retraining run, on the orchestration side (no torch here).

1. :func:`export_training_data` writes the marts the training-data gate just
   passed as parquet files, in a folder named by that gate's data fingerprint;
2. :func:`write_train_config` / :func:`write_eval_config` write the config files
   the ``shelfguard_train`` entry points read (locally or in a pod);
3. :func:`register_model` records the trained model's bytes (sha256) in the ledger.

The evaluation gate that blesses the model is :mod:`shelfguard.gates.evaluation`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upath import UPath

from shelfguard.config import Settings
from shelfguard.data import duckdb_wait
from shelfguard.ledger import ArtifactRecord, Ledger
from shelfguard.lineage import code_version

#: The three files the training entry points read; the column lists are the contract.
#: ``{schema}`` is the snapshot read: a run's candidate or the published one it pinned.
EXPORTS = {
    "pairs.parquet": (
        "SELECT query, product_id, grade, weight, split FROM {schema}.fct_training_pairs "
        "ORDER BY pair_id"
    ),
    "products.parquet": (
        "SELECT product_id, product_name, text_to_embed, product_class, top_category, content_hash "
        "FROM {schema}.dim_products "
        "WHERE is_active ORDER BY product_id"
    ),
    "golden.parquet": (
        "SELECT query_id, query, query_class, product_id, grade "
        "FROM {schema}.fct_golden_judgements "
        "WHERE is_known_product ORDER BY judgement_id"
    ),
}
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class ModelingError(RuntimeError):
    """A step of the model half cannot go on (missing gate, missing output, bad result)."""


def artifact_root(settings: Settings) -> UPath:
    """``SHELFGUARD_ARTIFACT_ROOT`` as a path: a local folder, or any fsspec URL
    (``s3://bucket/prefix``...) that the training pods read and write too."""
    return UPath(settings.artifact_root)


def run_dir(settings: Settings, run_id: str) -> UPath:
    """The artifact folder of one run (configs, results, the trained model)."""
    from shelfguard.run_context import run_dir as folder

    return folder(settings, run_id)


def training_snapshot(ledger: Ledger, run_id: str) -> str:
    """The data fingerprint the run's training-data gate passed on (``data:<id>`` subject)."""
    for gate in ledger.gate_results(run_id):
        if gate.gate == "training_data" and gate.status in ("pass", "warn"):
            return gate.subject.removeprefix("data:")
    raise ModelingError(f"run {run_id} has no passed training_data gate: nothing may be trained")


@dataclass(frozen=True)
class DatasetExport:
    """Where the training inputs of one data snapshot were written."""

    snapshot_id: str
    data_dir: UPath
    rows: dict[str, int]


def export_training_data(
    settings: Settings, snapshot_id: str, *, schema: str = "marts"
) -> DatasetExport:
    """Write the marts as parquet under ``datasets/<snapshot>``; a snapshot is written once.

    ``schema`` is where the snapshot's tables are: the published snapshot a retraining
    run pinned (never changed by a later publication), or ``marts``.

    From a DuckDB warehouse, DuckDB copies each query to parquet. From a PostgreSQL one,
    the three queries are read in one read-only REPEATABLE READ transaction (one
    snapshot of the marts) with ``COPY ... TO STDOUT`` as CSV, and DuckDB (in memory)
    writes the parquet files with the column types PostgreSQL reported, mapped to DuckDB's
    (``bigint`` -> ``BIGINT``, ``double precision`` -> ``DOUBLE``, ...): the same files,
    types and row order as from DuckDB.
    """
    import tempfile

    import pyarrow.parquet as pq

    if not _SCHEMA_NAME.match(schema):
        raise ModelingError(f"not a schema name: {schema!r}")
    data_dir = artifact_root(settings) / "datasets" / snapshot_id
    data_dir.mkdir(parents=True, exist_ok=True)
    missing = {
        name: query.format(schema=schema)
        for name, query in EXPORTS.items()
        if not (data_dir / name).exists()
    }
    if missing:
        # Written locally (DuckDB writes files), then put in the artifact store when that
        # is remote; each file lands whole or not at all, and exists only once complete.
        local = isinstance(data_dir, Path)
        with tempfile.TemporaryDirectory(prefix="shelfguard-export-") as tmp:
            folder = Path(str(data_dir)) if local else Path(tmp)
            if settings.warehouse_kind == "postgresql":
                _export_from_postgres(settings.warehouse_url, missing, folder)
            else:
                _export_from_duckdb(settings.duckdb_path, missing, folder)
            if not local:
                for name in missing:
                    (data_dir / name).write_bytes((folder / name).read_bytes())
    rows = {}
    for name in EXPORTS:
        with (data_dir / name).open("rb") as handle:
            rows[name] = int(pq.read_metadata(handle).num_rows)
    return DatasetExport(snapshot_id=snapshot_id, data_dir=data_dir, rows=rows)


def _export_from_duckdb(duckdb_path: Path, exports: dict[str, str], data_dir: Path) -> None:
    """Write ``exports`` (file name -> query) as parquet from the DuckDB warehouse."""

    con = duckdb_wait.connect(duckdb_path, read_only=True)
    try:
        for name, query in exports.items():
            partial = (data_dir / name).with_suffix(".partial")
            con.execute(f"COPY ({query}) TO '{partial}' (FORMAT parquet)").fetchall()
            partial.rename(data_dir / name)
    finally:
        con.close()


#: PostgreSQL type OIDs (``pg_type.oid``) of the marts' columns -> the DuckDB type written.
_PG_TYPE_OIDS = {
    16: "BOOLEAN",
    20: "BIGINT",
    21: "SMALLINT",
    23: "INTEGER",
    25: "VARCHAR",
    700: "FLOAT",
    701: "DOUBLE",
    1042: "VARCHAR",
    1043: "VARCHAR",
    1082: "DATE",
    1114: "TIMESTAMP",
    1184: "TIMESTAMP WITH TIME ZONE",
}


def _duckdb_columns(name: str, description: Any) -> dict[str, str]:
    columns = {}
    for column in description:
        duck_type = _PG_TYPE_OIDS.get(int(column.type_code))
        if duck_type is None:
            raise ModelingError(
                f"{name}: column {column.name} has PostgreSQL type oid {column.type_code}, "
                "which the export does not map; cast it in the mart (bigint, integer, "
                "smallint, double precision, varchar, boolean, date, timestamp)"
            )
        columns[str(column.name)] = duck_type
    return columns


def _export_from_postgres(url: str, exports: dict[str, str], data_dir: Path) -> None:
    """Write ``exports`` (file name -> query) as parquet from one snapshot of PostgreSQL."""
    import tempfile

    import duckdb

    from shelfguard.quality import open_warehouse

    with (
        tempfile.TemporaryDirectory(prefix="shelfguard-export-") as tmp,
        open_warehouse(url) as engine,
    ):
        connection: Any = engine.raw_connection()
        try:
            connection.rollback()  # SET TRANSACTION must open the transaction it sets
            cursor = connection.cursor()
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            columns: dict[str, dict[str, str]] = {}
            for name, query in exports.items():
                cursor.execute(f"SELECT * FROM ({query}) AS export LIMIT 0")
                columns[name] = _duckdb_columns(name, cursor.description)
                with (Path(tmp) / f"{name}.csv").open("wb") as out:
                    cursor.copy_expert(
                        f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)", out
                    )
            connection.rollback()
        finally:
            connection.close()
        con = duckdb.connect(":memory:", config={"temp_directory": str(Path(tmp) / "duckdb")})
        try:
            for name in exports:
                target = data_dir / name
                partial = target.with_suffix(".partial")
                spec = ", ".join(f"'{col}': '{kind}'" for col, kind in columns[name].items())
                # PostgreSQL's CSV: NULL is an empty field, an empty string is "".
                source = (
                    f"read_csv('{Path(tmp) / f'{name}.csv'}', header=true, delim=',', "
                    "quote='\"', escape='\"', auto_detect=false, allow_quoted_nulls=false, "
                    f"columns={{{spec}}})"
                )
                # Through a table: DuckDB writes the parquet schema from the table's statistics
                # (a column without NULLs is "required"), as it does from the DuckDB marts.
                con.execute(f"CREATE OR REPLACE TEMP TABLE export AS SELECT * FROM {source}")
                con.execute(f"COPY export TO '{partial}' (FORMAT parquet)")
                partial.rename(target)
        finally:
            con.close()


def _write_json(path: UPath, payload: dict[str, Any]) -> UPath:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    return path


def write_train_config(
    settings: Settings, run_id: str, export: DatasetExport, overrides: dict[str, Any] | None = None
) -> UPath:
    """The ``TrainConfig`` file of this run; ``overrides`` come from the DAG run's params."""
    folder = run_dir(settings, run_id)
    config = {
        "data_dir": str(export.data_dir),
        "output_dir": str(folder / "training"),
        "data_snapshot_id": export.snapshot_id,
        "code_version": code_version(),
        **(overrides or {}),
    }
    return _write_json(folder / "train_config.json", config)


def read_json(path: UPath, what: str) -> dict[str, Any]:
    """A JSON result written by an entry point, with a clear error when it is missing."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelingError(f"{what} not found at {path}: did the entry point run?") from exc
    if not isinstance(data, dict):
        raise ModelingError(f"{what} at {path} is not a JSON object")
    return data


def register_model(settings: Settings, ledger: Ledger, run_id: str) -> ArtifactRecord:
    """Record the trained model (uri, sha256, lineage) and the run's training lineage."""
    from shelfguard.model import objects

    result = read_json(run_dir(settings, run_id) / "train_result.json", "training result")
    meta = {
        k: result[k] for k in ("config_hash", "base_model_sha256", "data_snapshot_id", "metrics")
    }
    artifact = objects.register(
        settings, ledger, run_id, "model", str(result["model_dir"]), result["model_sha256"], meta
    )
    ledger.update_lineage(
        run_id,
        data_snapshot_id=result["data_snapshot_id"],
        training_config_hash=result["config_hash"],
        base_model_sha256=result["base_model_sha256"],
        model_sha256=result["model_sha256"],
    )
    return artifact


def write_eval_config(
    settings: Settings, ledger: Ledger, run_id: str, export_dir: UPath, precision: str = "auto"
) -> UPath:
    """The ``EvalConfig`` file: challenger, the champion (when there is one), base and BM25.

    ``precision`` is the policy's ``index.precision``, so the gate judges the numbers
    the index will serve.
    """
    result = read_json(run_dir(settings, run_id) / "train_result.json", "training result")
    models = {"challenger": result["model_dir"], "base": result["base_model"]}
    champion = ledger.get_alias("champion")
    if champion is not None:
        models["champion"] = champion.model.uri
    folder = run_dir(settings, run_id)
    return _write_json(
        folder / "eval_config.json",
        {
            "data_dir": str(export_dir),
            "models": models,
            "include_bm25": True,
            "output_path": str(folder / "evaluation.json"),
            "precision": precision,
        },
    )
