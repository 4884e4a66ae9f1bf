"""The index gate: the catalog index a pair would serve, judged before it is promoted.

Checks (subject ``index:<sha256>``), measured by the ``shelfguard_train embed`` entry
point and held to ``governance.yml`` → ``index``:

- **coverage** — every active product has exactly one vector, no deleted
  product has any, and each vector was built from the product's current text;
- **vectors** — the dimension is the model's, every value is finite, every
  vector has unit norm;
- **model** — the index records the sha256 of the model that built it, and
  that is the model being promoted with it;
- **ANN recall** — the approximate search finds at least ``min_ann_recall_at_10``
  of the exact top 10 on a sample;
- **canaries** — golden queries find an Exact product in their top 10 at least
  at ``min_canary_hit_rate``;
- **encoder** — an int8 index's encoder files hash to what its manifest records and
  were exported from the model being promoted (a torch index has no encoder files);
- **encoder evaluated** — on a run that evaluated the model, the index encodes with
  the precision, and for int8 the very encoder, the evaluation gate judged.

See docs/gates/index.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shelfguard.gates.core import Check, GateOutcome, check
from shelfguard.model.index import embed_paths, embed_result, register_index
from shelfguard.model.training import ModelingError, read_json
from shelfguard.policy import IndexPolicy

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext

GATE = "index"
NORM_TOLERANCE = 1e-3


def run(ctx: GateContext) -> GateOutcome:
    """Register the run's index and judge it, bound to the index's sha256.

    The index must belong to the model in the run's lineage (``model_sha256``): the
    challenger on a retraining run, the champion on a catalog refresh.
    """
    settings, run_id = ctx.settings, ctx.run_id
    result = embed_result(settings, run_id)
    if "checks" not in result:
        raise ModelingError("the embedding result has no 'checks': was it written by `embed`?")
    artifact = register_index(settings, ctx.ledger, run_id)
    model_sha256 = str(ctx.lineage.get("model_sha256") or "")
    evaluation_path = ctx.run_dir / "evaluation.json"
    evaluated = (
        evaluated_encoder(read_json(evaluation_path, "evaluation result"))
        if evaluation_path.exists()
        else None
    )
    return GateOutcome.of(
        GATE,
        f"index:{artifact.sha256}",
        decide(result["checks"], model_sha256, ctx.policy.index, evaluated),
        {
            "counts": result.get("counts", {}),
            "products_per_second": result.get("products_per_second"),
            "seconds": result.get("seconds"),
            "model_sha256": result["model_sha256"],
            "canary_misses": (result["checks"].get("canary") or {}).get("misses", [])[:5],
        },
        str(embed_paths(settings, run_id)[2]),
    )


def _count(value: Any) -> int:
    """A count reported either as a number or as ``{"count": n, ...}``."""
    if isinstance(value, dict):
        return int(value.get("count", 0))
    if isinstance(value, list):
        return len(value)
    return int(value or 0)


def _check(name: str, ok: bool, observed: Any, expected: str, comment: str) -> Check:
    return check(
        name, passed=ok, severity="error", comment=comment, observed=observed, expected=expected
    )


def evaluated_encoder(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The precision and (int8) encoder sha256 the evaluation judged the challenger with."""
    challenger = (evaluation.get("models") or {}).get("challenger") or {}
    encoder = challenger.get("encoder") or {}
    return {
        "precision": (evaluation.get("inputs") or {}).get("precision", "fp32"),
        "sha256": encoder.get("sha256"),
    }


def decide(
    checks: dict[str, Any],
    model_sha256: str,
    policy: IndexPolicy,
    evaluated: dict[str, Any] | None = None,
) -> list[Check]:
    """Every check of the index gate from the entry point's measurements.

    ``model_sha256`` is the model the index must belong to: the challenger on a
    retraining run, the champion on a catalog refresh. ``evaluated`` is what the run's
    evaluation encoded with (:func:`evaluated_encoder`); None on a run without one.
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
    encoder = checks.get("encoder")
    if encoder is not None:  # indexes measured before encoders were recorded have none
        result.append(_encoder(encoder, model_sha256))
    if evaluated is not None:
        result.append(_encoder_evaluated(encoder or {}, evaluated))
    return result


def _described(encoder: dict[str, Any]) -> str:
    shown = f"{encoder.get('precision', 'fp32')} ({encoder.get('backend', 'torch')})"
    if encoder.get("sha256"):
        shown += f" {str(encoder['sha256'])[:12]}"
    if encoder.get("fallback"):
        shown += f"; int8 fell back: {encoder['fallback']}"
    return shown


def _encoder(encoder: dict[str, Any], model_sha256: str) -> Check:
    int8 = encoder.get("precision") == "int8"
    bound = not int8 or encoder.get("source_model_sha256") == model_sha256
    ok = bool(encoder.get("matches")) and bound
    observed = _described(encoder)
    if encoder.get("error"):
        observed += f"; {encoder['error']}"
    elif not bound:
        observed += f"; exported from {str(encoder.get('source_model_sha256'))[:16]}"
    return _check(
        "index.encoder",
        ok,
        observed,
        "int8: files as recorded, exported from the promoted model",
        "queries are encoded by the encoder the index was built with, bound to its model",
    )


def _encoder_evaluated(encoder: dict[str, Any], evaluated: dict[str, Any]) -> Check:
    precision = encoder.get("precision", "fp32")
    same = precision == evaluated.get("precision") and (
        precision != "int8" or encoder.get("sha256") == evaluated.get("sha256")
    )
    judged = f"{evaluated.get('precision')}" + (
        f" {str(evaluated['sha256'])[:12]}" if evaluated.get("sha256") else ""
    )
    return _check(
        "index.encoder_evaluated",
        same,
        _described(encoder),
        f"== {judged}",
        "the index serves the encoder whose rankings the evaluation gate judged",
    )
