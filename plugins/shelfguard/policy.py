"""The governance policy (``governance.yml``): typed, validated on load, hashed per run.

Governance owners edit the YAML file; everything that decides (gates,
evaluation, approval, promotion) reads thresholds from the :class:`Policy`
loaded here. Unknown keys are errors, so a typo never silently disables a
check.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shelfguard.config import project_root

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Split = Literal["train", "validation"]
Baseline = Literal["base", "bm25"]


def _default_min_pairs() -> dict[Split, int]:
    return {"train": 200, "validation": 20}


def _default_baselines() -> list[Baseline]:
    return ["base", "bm25"]


class PolicyError(ValueError):
    """The policy file is missing or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Privacy(_Strict):
    """Personal-data rules that apply before training."""

    k_anonymity: int = Field(5, ge=1, description="minimum distinct users per query")


class RawDataPolicy(_Strict):
    """Limits of the raw-data gate."""

    max_quarantine_share: Share = 0.01
    max_empty_required_share: Share = 0.01
    max_duplicate_id_share: Share = 0.01
    max_orphan_judgement_share: Share = 0.01
    allow_extra_columns: bool = False


class TrainingDataPolicy(_Strict):
    """Limits of the training-data gate."""

    min_pairs_per_split: dict[Split, int] = Field(default_factory=_default_min_pairs)
    max_grade_share: Share = 0.95
    max_category_drift: Share = 0.15


class EvaluationPolicy(_Strict):
    """Rules of the evaluation gate (the model's blessing)."""

    floors: dict[str, Share] = Field(default_factory=dict)
    max_drop_vs_champion: Share = 0.01
    require_improvement: bool = False
    slice_min_queries: int = Field(8, ge=1)
    max_slice_drop: Share = 0.05
    first_run_must_beat: list[Baseline] = Field(default_factory=_default_baselines)


class IndexPolicy(_Strict):
    """Rules of the index gate."""

    min_ann_recall_at_10: Share = 0.95
    min_canary_hit_rate: Share = 0.6
    #: Precision of every encoding the evaluation gate judges and the index serves:
    #: "auto" is bf16 where the hardware computes it natively (its vectors stay within
    #: 1e-4 cosine of fp32), else fp32. An incremental refresh keeps its index's precision.
    precision: Literal["auto", "fp32", "bf16"] = "auto"


class ApprovalPolicy(_Strict):
    """Who approves promotions and how long they have."""

    mode: Literal["auto", "required"] = "auto"
    approvers: list[str] = Field(default_factory=list)
    timeout_minutes: float = Field(1440, gt=0, description="no answer by then means rejected")
    #: An index rebuilt by ``catalog_refresh`` with the already-approved champion model
    #: is approved by policy once the index gate passed ("auto"), or waits for a person.
    index_refresh: Literal["auto", "required"] = "auto"


class Policy(_Strict):
    """The whole ``governance.yml``."""

    version: Literal[1]
    owners: list[str] = Field(default_factory=list)
    required_gates: list[str] = Field(default_factory=list)
    privacy: Privacy = Field(default_factory=lambda: Privacy())
    raw_data: RawDataPolicy = Field(default_factory=lambda: RawDataPolicy())
    training_data: TrainingDataPolicy = Field(default_factory=lambda: TrainingDataPolicy())
    severities: dict[str, Literal["error", "warn"]] = Field(default_factory=dict)
    evaluation: EvaluationPolicy = Field(default_factory=lambda: EvaluationPolicy())
    index: IndexPolicy = Field(default_factory=lambda: IndexPolicy())
    approval: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy())
    sha256: str = Field("", description="sha256 of the file's bytes; set by load_policy")
    path: str = Field("", description="where the policy was read from; set by load_policy")

    def severity(self, check: str, default: Literal["error", "warn"] = "error") -> str:
        """The severity of a named check: the policy's override, else ``default``."""
        return self.severities.get(check, default)


def default_policy_path() -> Path:
    """``$SHELFGUARD_POLICY``, else ``governance.yml`` at the project root."""
    override = os.environ.get("SHELFGUARD_POLICY")
    return Path(override) if override else project_root() / "governance.yml"


def _describe(error: ValidationError, path: Path) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return f"{path}: invalid policy\n" + "\n".join(lines)


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate the policy file; raise :class:`PolicyError` with every problem listed."""
    path = path or default_policy_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from exc
    return parse_policy(data, str(path))


def parse_policy(data: bytes, source: str) -> Policy:
    """Validate a policy's bytes (read from ``source``: a path, or where they were pinned).

    The same bytes always give the same policy and the same ``sha256``: a run pins its
    policy by storing these bytes in the ledger and parses them again in every task.
    """
    path = Path(source)
    try:
        raw = yaml.safe_load(data) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    for key in ("sha256", "path"):
        if key in raw:
            raise PolicyError(f"{path}: {key!r} is computed on load and cannot be set")
    try:
        return Policy(**raw, sha256=hashlib.sha256(data).hexdigest(), path=source)
    except ValidationError as exc:
        raise PolicyError(_describe(exc, path)) from exc
