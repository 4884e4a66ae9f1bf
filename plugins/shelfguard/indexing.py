"""The catalog index, on the orchestration side (no torch here): config, registration, gate.

1. :func:`write_embed_config` writes the config the ``shelfguard_train embed``
   entry point reads — a full build with a challenger, or an incremental
   refresh from the champion's index with the champion's model;
2. :func:`register_index` records the index folder (sha256, the model it was
   built with, how many products were encoded) in the ledger;
3. :func:`run_index_gate` decides the index gate from the checks the entry
   point measured and the thresholds in ``governance.yml`` → ``index``.

The index gate checks (subject ``index:<sha256>``):

- **coverage** — every active product has exactly one vector, no deleted
  product has any, and each vector was built from the product's current text;
- **vectors** — the dimension is the model's, every value is finite, every
  vector has unit norm;
- **model** — the index records the sha256 of the model that built it, and
  that is the model being promoted with it;
- **ANN recall** — the approximate search finds at least ``min_ann_recall_at_10``
  of the exact top 10 on a sample;
- **canaries** — golden queries find an Exact product in their top 10 at least
  at ``min_canary_hit_rate``.
"""

from __future__ import annotations

import json
from typing import Any

from upath import UPath

from shelfguard.config import Settings
from shelfguard.failpoints import failpoint
from shelfguard.ledger import ArtifactRecord, GateRecord, Ledger
from shelfguard.modeling import DatasetExport, ModelingError, read_json, run_dir
from shelfguard.policy import IndexPolicy

GATE = "index"
NORM_TOLERANCE = 1e-3


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
    """Record the run's index folder as an ``index`` artifact bound to its model's sha256."""
    from shelfguard import objects

    result = embed_result(settings, run_id)
    # Stored by content: the champion never depends on this run's folder.
    uri = objects.store(settings, "index", str(result["index_dir"]), result["index_sha256"])
    failpoint("index.stored")  # the rerun finds it stored and records it
    artifact = ledger.record_artifact(
        "index",
        uri,
        result["index_sha256"],
        produced_by_run=run_id,
        meta={
            "model_sha256": result["model_sha256"],
            "dim": result.get("dim"),
            "counts": result.get("counts", {}),
        },
    )
    ledger.update_lineage(run_id, index_sha256=artifact.sha256)
    return artifact


def _count(value: Any) -> int:
    """A count reported either as a number or as ``{"count": n, ...}``."""
    if isinstance(value, dict):
        return int(value.get("count", 0))
    if isinstance(value, list):
        return len(value)
    return int(value or 0)


def _check(name: str, ok: bool, observed: Any, expected: str, comment: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": "pass" if ok else "fail",
        "severity": "error",
        "observed": observed,
        "expected": expected,
        "comment": comment,
    }


def decide(checks: dict[str, Any], model_sha256: str, policy: IndexPolicy) -> list[dict[str, Any]]:
    """Every check of the index gate from the entry point's measurements.

    ``model_sha256`` is the model the index must belong to: the challenger on a
    retraining run, the champion on a catalog refresh.
    """
    coverage = checks.get("coverage") or {}
    vectors = checks.get("vectors") or {}
    model = checks.get("model") or {}
    ann = checks.get("ann") or {}
    canary = checks.get("canary") or {}
    result = []
    for key, what in (
        ("missing", "active products without a vector"),
        ("stale", "vectors of products that are no longer active"),
        ("duplicates", "products with more than one vector"),
        ("hash_mismatch", "vectors built from an older text of the product"),
    ):
        n = _count(coverage.get(key))
        sample = coverage.get(key, {}).get("ids", []) if isinstance(coverage.get(key), dict) else []
        observed = f"{n}" + (f" (e.g. {', '.join(str(i) for i in sample[:5])})" if sample else "")
        result.append(_check(f"index.coverage.{key}", n == 0, observed, "0", what))
    dim, expected_dim = vectors.get("dim"), vectors.get("expected_dim")
    result.append(
        _check(
            "index.vectors.dim",
            dim is not None and dim == expected_dim,
            dim,
            f"== {expected_dim}",
            "the model's embedding dimension",
        )
    )
    bad = _count(vectors.get("non_finite"))
    result.append(_check("index.vectors.finite", bad == 0, bad, "0", "NaN or infinite values"))
    low, high = float(vectors.get("norm_min") or 0.0), float(vectors.get("norm_max") or 0.0)
    result.append(
        _check(
            "index.vectors.unit_norm",
            abs(low - 1) <= NORM_TOLERANCE and abs(high - 1) <= NORM_TOLERANCE,
            f"{low:.4f}..{high:.4f}",
            f"1 ± {NORM_TOLERANCE}",
            "vectors are L2-normalised for cosine search",
        )
    )
    recorded = model.get("manifest_sha256")
    result.append(
        _check(
            "index.model_sha256",
            recorded == model_sha256 and bool(model.get("matches")),
            (recorded or "none")[:16],
            f"== {model_sha256[:16]}",
            "the index was built by the exact model it is promoted with",
        )
    )
    recall = float(ann.get("recall@10") or 0.0)
    result.append(
        _check(
            "index.ann_recall@10",
            recall >= policy.min_ann_recall_at_10,
            round(recall, 4),
            f">= {policy.min_ann_recall_at_10}",
            f"approximate vs exact top 10 on {ann.get('sample_size', 0)} sampled products",
        )
    )
    queries = int(canary.get("queries") or 0)
    rate = float(canary.get("hit_rate") or 0.0)
    result.append(
        _check(
            "index.canary_hit_rate",
            rate >= policy.min_canary_hit_rate and (queries > 0 or policy.min_canary_hit_rate == 0),
            round(rate, 4),
            f">= {policy.min_canary_hit_rate}",
            f"{canary.get('hits', 0)} of {queries} golden queries find an Exact product in the top 10",
        )
    )
    return result


def run_index_gate(
    settings: Settings,
    policy: IndexPolicy,
    ledger: Ledger,
    run_id: str,
    model_sha256: str,
) -> GateRecord:
    """Register the run's index, decide the gate and record it bound to the index's sha256."""
    result = embed_result(settings, run_id)
    if "checks" not in result:
        raise ModelingError("the embedding result has no 'checks': was it written by `embed`?")
    artifact = register_index(settings, ledger, run_id)
    checks = decide(result["checks"], model_sha256, policy)
    status = "fail" if any(c["status"] == "fail" for c in checks) else "pass"
    return ledger.record_gate(
        run_id,
        GATE,
        status,
        subject=f"index:{artifact.sha256}",
        checks=checks,
        metrics={
            "counts": result.get("counts", {}),
            "products_per_second": result.get("products_per_second"),
            "seconds": result.get("seconds"),
            "model_sha256": result["model_sha256"],
            "canary_misses": (result["checks"].get("canary") or {}).get("misses", [])[:5],
        },
        report_uri=str(embed_paths(settings, run_id)[2]),
    )
