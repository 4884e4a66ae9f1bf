"""The evaluation gate: a model's blessing, decided from golden-set metrics and the policy.

Rules (all thresholds from ``governance.yml`` → ``evaluation``):

- **floors** — the challenger's overall metrics must reach the absolute floors;
- **champion** — when a champion exists, the challenger may not drop more than
  ``max_drop_vs_champion`` nDCG@10 below it (and must beat it when
  ``require_improvement``);
- **first run** — with no champion, the challenger must beat every baseline in
  ``first_run_must_beat`` (the base model, BM25): never a rubber stamp;
- **slices** — no product-class slice with at least ``slice_min_queries`` golden
  queries may drop more than ``max_slice_drop`` against the reference (the
  champion, else the base model).

The blessing is a ``gate_results`` row with subject ``model:<sha256>``: it is
bound to the exact bytes of the model, not to a task or a name. The metrics come from
``evaluation.json``, written by the ``shelfguard_train evaluate`` entry point.
See docs/gates/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shelfguard.gates.core import Check, GateOutcome, check
from shelfguard.model.training import read_json
from shelfguard.policy import EvaluationPolicy

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext

PRIMARY = "ndcg@10"
GATE = "evaluation"

Metrics = Mapping[str, Any]


def run(ctx: GateContext) -> GateOutcome:
    """Decide the challenger's blessing from the run's ``evaluation.json``, bound to the
    model's sha256."""
    folder = ctx.run_dir
    evaluation = read_json(folder / "evaluation.json", "evaluation result")
    result = read_json(folder / "train_result.json", "training result")
    models = evaluation.get("models", {})
    return GateOutcome.of(
        GATE,
        f"model:{result['model_sha256']}",
        decide(models, ctx.policy.evaluation),
        {
            "overall": metrics_table(models),
            "slices": {name: m.get("slices", {}) for name, m in models.items()},
        },
        str(folder / "evaluation.json"),
    )


def _check(
    name: str, ok: bool, observed: float, expected: str, comment: str, metric: str = PRIMARY
) -> Check:
    # The verdict line says the value, the limit it was held to and what that limit came
    # from ("ndcg@10 0.5317, needs >= 0.5400 (champion 0.5500)"), not a bare number.
    return check(
        name,
        passed=ok,
        severity="error",
        comment=comment,
        observed=round(observed, 4),
        expected=expected,
        message=f"{metric} {observed:.4f}, needs {expected}",
    )


def _overall(models: Metrics, name: str) -> dict[str, float]:
    return dict(models.get(name, {}).get("overall", {}))


def decide(models: Metrics, policy: EvaluationPolicy) -> list[Check]:
    """Every check of the gate for one challenger, given the evaluation JSON's ``models``.

    ``models`` maps ``challenger``, ``base``, ``bm25`` and optionally ``champion``
    to ``{"overall": {metric: value}, "slices": {class: {"n_queries": n, metric: value}}}``.
    """
    if "challenger" not in models:
        raise ValueError("evaluation results have no 'challenger' entry")
    challenger = _overall(models, "challenger")
    checks = []
    for metric, floor in sorted(policy.floors.items()):
        value = challenger.get(metric)
        if value is None:
            raise ValueError(
                f"the policy sets a floor on {metric!r} but the evaluation has no such metric"
            )
        checks.append(
            _check(
                f"floor:{metric}",
                value >= floor,
                value,
                f">= {floor}",
                f"absolute quality floor on {metric}",
                metric,
            )
        )
    score = challenger[PRIMARY]
    has_champion = "champion" in models
    if has_champion:
        champion = _overall(models, "champion")[PRIMARY]
        limit = champion if policy.require_improvement else champion - policy.max_drop_vs_champion
        ok = score > champion if policy.require_improvement else score >= limit
        relation = (
            f"> {champion:.4f} (the champion)"
            if policy.require_improvement
            else f">= {limit:.4f} (champion {champion:.4f} - {policy.max_drop_vs_champion:g})"
        )
        checks.append(
            _check(
                f"vs_champion:{PRIMARY}",
                ok,
                score,
                relation,
                f"regression against the model in production (champion {PRIMARY} {champion:.4f})",
            )
        )
    else:
        for baseline in policy.first_run_must_beat:
            if baseline not in models:
                raise ValueError(
                    f"the policy requires beating {baseline!r} but it was not evaluated"
                )
            reference = _overall(models, baseline)[PRIMARY]
            checks.append(
                _check(
                    f"beats_{baseline}:{PRIMARY}",
                    score > reference,
                    score,
                    f"> {reference:.4f} ({baseline})",
                    f"first model: must beat {baseline} ({PRIMARY} {reference:.4f}), never a rubber stamp",
                )
            )
    checks.extend(_slice_checks(models, policy, "champion" if has_champion else "base"))
    return checks


def _slice_checks(models: Metrics, policy: EvaluationPolicy, reference: str) -> list[Check]:
    mine = models["challenger"].get("slices", {})
    theirs = models.get(reference, {}).get("slices", {})
    checks = []
    for name in sorted(mine):
        slice_metrics = mine[name]
        if slice_metrics.get("n_queries", 0) < policy.slice_min_queries or name not in theirs:
            continue
        value, before = slice_metrics[PRIMARY], theirs[name][PRIMARY]
        checks.append(
            _check(
                f"slice:{name}",
                value >= before - policy.max_slice_drop,
                value,
                f">= {before - policy.max_slice_drop:.4f} ({reference} {before:.4f} on this class)",
                f"{slice_metrics['n_queries']} golden queries of class {name!r} must not regress",
            )
        )
    return checks


def metrics_table(models: Metrics) -> dict[str, dict[str, float]]:
    """Overall metrics per model, for ``shelfguard status`` and the report."""
    return {name: _overall(models, name) for name in models}
