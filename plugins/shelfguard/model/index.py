"""The catalog index, on the orchestration side (no torch here): config and registration.

1. :func:`write_embed_config` writes the config the ``shelfguard_train embed``
   entry point reads — a full build with a challenger, or an incremental
   refresh from the champion's index with the champion's model;
2. :func:`register_index` records the index folder (sha256, the model it was
   built with, how many products were encoded) in the ledger.

The index gate that judges it is :mod:`shelfguard.gates.index`.
"""

from __future__ import annotations

import json
from typing import Any

from upath import UPath

from shelfguard.config import Settings
from shelfguard.ledger import ArtifactRecord, Ledger
from shelfguard.model.training import DatasetExport, read_json, run_dir


def embed_paths(settings: Settings, run_id: str) -> tuple[UPath, UPath, UPath]:
    """(config file, index folder, result file) of a run's embedding step."""
    folder = run_dir(settings, run_id)
    return folder / "embed_config.json", folder / "index", folder / "embed_result.json"


def write_embed_config(
    settings: Settings,
    run_id: str,
    export: DatasetExport,
    model_dir: str,
    previous_index_dir: str | None = None,
    precision: str = "auto",
) -> UPath:
    """The ``EmbedConfig`` file: full with ``model_dir``, or incremental from a previous index.

    ``precision`` is the policy's ``index.precision``.
    """
    config_path, index_dir, _ = embed_paths(settings, run_id)
    config: dict[str, Any] = {
        "model_dir": model_dir,
        "products_path": str(export.data_dir / "products.parquet"),
        "golden_path": str(export.data_dir / "golden.parquet"),
        "output_dir": str(index_dir),
        "precision": precision,
    }
    if previous_index_dir:
        config["previous_index_dir"] = previous_index_dir
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return config_path


def embed_result(settings: Settings, run_id: str) -> dict[str, Any]:
    """The JSON the ``embed`` entry point wrote for this run."""
    return read_json(embed_paths(settings, run_id)[2], "embedding result")


def register_index(settings: Settings, ledger: Ledger, run_id: str) -> ArtifactRecord:
    """Record the run's index folder as an ``index`` artifact bound to its model's sha256,
    with the encoder it serves: precision, backend and, for int8, the export's sha256 and
    the model it was exported from."""
    from shelfguard.model import objects

    result = embed_result(settings, run_id)
    encoder = (result.get("checks") or {}).get("encoder") or {}
    meta = {
        "model_sha256": result["model_sha256"],
        "dim": result.get("dim"),
        "counts": result.get("counts", {}),
        "encoder": {
            key: encoder.get(key)
            for key in ("precision", "backend", "sha256", "manifest_sha256", "source_model_sha256")
        },
    }
    artifact = objects.register(
        settings, ledger, run_id, "index", str(result["index_dir"]), result["index_sha256"], meta
    )
    ledger.update_lineage(run_id, index_sha256=artifact.sha256)
    return artifact
