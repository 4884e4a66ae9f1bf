"""The orchestration side reads and writes artifacts by URI (here fsspec's memory://)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import duckdb
import fsspec
import pyarrow.parquet as pq
import pytest

from shelfguard.config import Settings, load_settings
from shelfguard.model.index import embed_paths, write_embed_config
from shelfguard.model.training import export_training_data, read_json, run_dir, write_train_config
from shelfguard.serving.pairs import local_copy

MARTS = """
create schema marts;
create table marts.fct_training_pairs as
    select 'oak desk' as query, 1::bigint as product_id, 2 as grade, 1.0 as weight,
           'train' as split, 1 as pair_id
    union all select 'sofa', 2, 1, 0.5, 'validation', 2;
create table marts.dim_products as
    select 1::bigint as product_id, 'Oak Desk' as product_name, 'oak desk' as text_to_embed,
           'Desks' as product_class, 'Furniture' as top_category, 'h1' as content_hash,
           true as is_active
    union all select 2, 'Sofa', 'grey sofa', 'Sofas', 'Furniture', 'h2', true
    union all select 3, 'Gone', 'gone', 'Sofas', 'Furniture', 'h3', false;
create table marts.fct_golden_judgements as
    select 7 as query_id, 'desk' as query, 'Desks' as query_class, 1::bigint as product_id,
           2 as grade, true as is_known_product, 1 as judgement_id;
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    root = f"memory://shelfguard-{uuid.uuid4().hex}/artifacts"
    settings = load_settings(
        {"SHELFGUARD_HOME": str(tmp_path / "home"), "SHELFGUARD_ARTIFACT_ROOT": root}
    )
    settings.ensure_dirs()
    con = duckdb.connect(str(settings.duckdb_path))
    con.execute(MARTS)
    con.close()
    return settings


def test_the_training_export_lands_in_the_store(settings: Settings) -> None:
    export = export_training_data(settings, "snap1")
    assert str(export.data_dir) == f"{settings.artifact_root}/datasets/snap1"
    assert export.rows == {"pairs.parquet": 2, "products.parquet": 2, "golden.parquet": 1}
    with (export.data_dir / "products.parquet").open("rb") as handle:
        table = pq.read_table(handle)
    assert table.column("product_id").to_pylist() == [1, 2]
    assert "product_name" in table.column_names
    # A snapshot is written once: a second export reads what is there.
    before = (export.data_dir / "pairs.parquet").read_bytes()
    assert export_training_data(settings, "snap1").rows == export.rows
    assert (export.data_dir / "pairs.parquet").read_bytes() == before


def test_configs_name_uris_the_entry_points_can_stage(settings: Settings) -> None:
    export = export_training_data(settings, "snap1")
    run_id = "search_model_retraining/manual__1"
    config = write_train_config(settings, run_id, export, {"epochs": 2})
    assert str(config).startswith("memory://")
    written = read_json(config, "training config")
    assert written["data_dir"] == str(export.data_dir)
    assert written["output_dir"] == f"{run_dir(settings, run_id)}/training"
    assert written["epochs"] == 2

    embed = write_embed_config(settings, run_id, export, "memory://models/m1")
    payload = json.loads(embed.read_text())
    assert payload["products_path"] == f"{export.data_dir}/products.parquet"
    assert payload["output_dir"] == str(embed_paths(settings, run_id)[1])


def test_a_remote_artifact_is_searched_from_a_verified_local_copy(settings: Settings) -> None:
    fs = fsspec.filesystem("memory")
    base = f"/{uuid.uuid4().hex}/index"
    fs.pipe({f"{base}/manifest.json": b"{}", f"{base}/sub/vectors.npy": b"123"})
    local = local_copy(settings, f"memory://{base}", "abc123")
    assert local == settings.home / "cache" / "abc123"
    assert (local / "manifest.json").read_bytes() == b"{}"
    assert (local / "sub" / "vectors.npy").read_bytes() == b"123"
    fs.rm(base, recursive=True)
    assert local_copy(settings, f"memory://{base}", "abc123") == local  # cached
    assert local_copy(settings, "/plain/path", "x") == Path("/plain/path")
