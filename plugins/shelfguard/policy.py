"""The governance policy (``governance.yml``): typed, validated on load, hashed per run.

Governance owners edit the YAML file; everything that decides (gates,
evaluation, approval, promotion) reads thresholds from the :class:`Policy`
loaded here. The policy cannot be loosened by accident:

- unknown keys are errors, so a typo never silently disables a check;
- every count, share and timeout is a finite number in a stated range (no
  ``.inf``, no NaN, no negative minimum, no share above 1), and numbers are
  never taken from strings or booleans;
- ``required_gates`` always holds the mandatory gates (:data:`MANDATORY_GATES`);
- ``required_suites`` names, per data gate, the suites it must run: a suite file deleted,
  renamed or bound to another gate then fails that gate instead of silently weakening it
  (optional: a policy without it requires no suite beyond the files each gate finds);
- a person must approve only where approvers are listed;
- ``privacy.k_anonymity`` is at least 2 (below 5 is accepted with a warning,
  see :attr:`Policy.warnings`);
- the YAML itself is bounded: at most :data:`MAX_POLICY_BYTES`, one document,
  no anchors or aliases (refused while parsing, before any document is built),
  no duplicate keys, a nesting depth of at most :data:`MAX_DEPTH`.

Error messages name the file and the key, and echo at most one short line of
the input, whatever the input is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node

from shelfguard.config import project_root

logger = logging.getLogger(__name__)

#: Larger policy files are refused before they are parsed (the shipped one is ~3 KiB).
MAX_POLICY_BYTES = 64 * 1024
#: Deepest nesting of YAML collections accepted (the policy itself needs 3).
MAX_DEPTH = 10
#: Longest echo of the input in an error message (one line, always).
ECHO_CHARS = 80
#: At most this many validation problems are listed; the rest are counted.
MAX_LISTED_ERRORS = 20

#: Gates promotion must always find passed (``required_gates`` must hold every one):
#: the data gates (``ingest``, ``raw_data``, ``training_data``), the model's
#: ``evaluation`` and the ``index`` gate.
MANDATORY_GATES: tuple[str, ...] = ("ingest", "raw_data", "training_data", "evaluation", "index")
#: Gates recorded in the ledger, hence nameable in ``required_gates``: the mandatory ones
#: and ``dbt`` (the dbt tests of the warehouse models), which a policy may add.
Gate = Literal["ingest", "raw_data", "dbt", "training_data", "evaluation", "index"]
#: Gates that run expectation suites (``expectations/*.yml``), hence nameable in
#: ``required_suites``.
SuiteGate = Literal["raw_data", "training_data"]

#: ``privacy.k_anonymity`` below this is accepted but reported in :attr:`Policy.warnings`.
K_ANONYMITY_ADVISED = 5
MAX_COUNT = 10_000_000
MAX_K_ANONYMITY = 1_000_000
MAX_SLICE_MIN_QUERIES = 1_000_000
#: 30 days: longer than any approval anyone would wait for, short of "never".
MAX_TIMEOUT_MINUTES = 30 * 24 * 60
MAX_NAMES = 100
MAX_NAME_CHARS = 200
MAX_ENTRIES = 1000

Split = Literal["train", "validation"]
Baseline = Literal["base", "bm25"]
#: A share: a finite number in [0, 1] (an int 0 or 1 is fine; a string or a boolean is not).
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
#: A minimum count: a whole number of at least 1.
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]


def _name(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError("must be a non-empty name without surrounding whitespace")
    return value


Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(_name)]
_SUITE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _suite_name(value: str) -> str:
    if not _SUITE_NAME.match(value):
        raise ValueError("must be a suite name: lower_snake_case, the file expectations/<name>.yml")
    return value


#: A suite's name: its file ``expectations/<name>.yml`` without the extension.
SuiteName = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(_suite_name)]
Key = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


def _public_key(value: str) -> str:
    from shelfguard.signing import SigningError, parse_public_key

    try:
        parse_public_key(value)
    except SigningError as exc:
        raise ValueError(str(exc)) from None
    return value


#: An approver's public key, as ``shelfguard keys new`` prints it: ``ed25519:<base64>``.
PublicKey = Annotated[str, Field(max_length=60), AfterValidator(_public_key)]


def _default_min_pairs() -> dict[Split, int]:
    return {"train": 200, "validation": 20}


def _default_baselines() -> list[Baseline]:
    return ["base", "bm25"]


def _default_gates() -> list[Gate]:
    return ["ingest", "raw_data", "training_data", "evaluation", "index"]


class PolicyError(ValueError):
    """The policy file is missing or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    # strict: a count is an int, a share a number, a flag a boolean — never a string.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Privacy(_Strict):
    """Personal-data rules that apply before training."""

    k_anonymity: int = Field(
        5,
        ge=2,
        le=MAX_K_ANONYMITY,
        description=f"minimum distinct users per query (2..{MAX_K_ANONYMITY}; below 5 warns)",
    )
    raw_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="days a quarantined line holding personal fields is kept (1..3650)",
    )


class RawDataPolicy(_Strict):
    """Limits of the raw-data gate (every share in [0, 1])."""

    max_quarantine_share: Share = 0.01
    max_empty_required_share: Share = 0.01
    max_duplicate_id_share: Share = 0.01
    max_orphan_judgement_share: Share = 0.01
    allow_extra_columns: bool = False


class TrainingDataPolicy(_Strict):
    """Limits of the training-data gate."""

    #: Both splits, each at least 1 pair: an absent split would go unchecked.
    min_pairs_per_split: dict[Split, Count] = Field(default_factory=_default_min_pairs)
    max_grade_share: Share = 0.95
    max_category_drift: Share = 0.15

    @field_validator("min_pairs_per_split")
    @classmethod
    def _every_split(cls, value: dict[Split, int]) -> dict[Split, int]:
        missing = [split for split in ("train", "validation") if split not in value]
        if missing:
            raise ValueError(f"must set a minimum for every split; missing: {', '.join(missing)}")
        return value


class EvaluationPolicy(_Strict):
    """Rules of the evaluation gate (the model's blessing)."""

    floors: dict[Key, Share] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    max_drop_vs_champion: Share = 0.01
    require_improvement: bool = False
    slice_min_queries: int = Field(8, ge=1, le=MAX_SLICE_MIN_QUERIES)
    max_slice_drop: Share = 0.05
    first_run_must_beat: list[Baseline] = Field(default_factory=_default_baselines, max_length=2)


class IndexPolicy(_Strict):
    """Rules of the index gate."""

    min_ann_recall_at_10: Share = 0.95
    min_canary_hit_rate: Share = 0.6
    #: Precision of every encoding the evaluation gate judges and the index serves:
    #: "auto" is bf16 where the hardware computes it natively (its vectors stay within
    #: 1e-4 cosine of fp32), else fp32; "int8" is the model's OpenVINO export quantised
    #: on the catalog's texts (on the CPU; torch where openvino is missing, recorded).
    #: An incremental refresh keeps its index's precision.
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"


class CanaryPolicy(_Strict):
    """How an approved challenger is tried on shoppers before it becomes champion: the
    share of sessions it answers, and the online gate's test (docs/canary.md)."""

    #: A challenger becomes champion only after passing the online gate (when there is a
    #: champion to compare with: a first model is promoted without a canary).
    required: bool = False
    share: float = Field(0.1, gt=0.0, le=0.5, allow_inf_nan=False)
    min_impressions: int = Field(5000, ge=100, le=100_000_000)
    metric: Literal["debiased_ctr", "click_ndcg"] = "debiased_ctr"
    max_drop: Share = 0.02
    confidence: float = Field(0.95, ge=0.5, le=0.999, allow_inf_nan=False)
    #: Fewer impressions than ``min_impressions`` by then: the online gate fails (closed).
    max_wait_minutes: int = Field(1440, ge=1, le=60 * 24 * 60)


class ApprovalPolicy(_Strict):
    """Who approves promotions and how long they have."""

    mode: Literal["auto", "required"] = "auto"
    #: An index rebuilt by ``catalog_refresh`` with the already-approved champion model
    #: is approved by policy once the index gate passed ("auto"), or waits for a person.
    index_refresh: Literal["auto", "required"] = "auto"
    timeout_minutes: float = Field(
        1440,
        gt=0,
        le=MAX_TIMEOUT_MINUTES,
        allow_inf_nan=False,
        description="no answer by then means rejected",
    )
    #: At least one whenever a person must decide (``mode`` or ``index_refresh`` required).
    #: Declared after both, so that its validator sees them. In the YAML each entry is a
    #: name (who decides through Airflow's auth manager) or ``{name: NAME, key: ed25519:…}``
    #: (who may also decide on the command line, signing with that key): the keys are
    #: split off into :attr:`keys`.
    approvers: list[Name] = Field(default_factory=list, max_length=MAX_NAMES, validate_default=True)
    #: The public key of each approver who listed one (set from ``approvers``, not by hand).
    keys: dict[Name, PublicKey] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "approvers" not in data:
            if isinstance(data, dict) and "keys" in data:
                raise ValueError("keys are listed with their approver: {name: NAME, key: KEY}")
            return data
        if "keys" in data:
            raise ValueError("keys are listed with their approver: {name: NAME, key: KEY}")
        entries = data["approvers"]
        if not isinstance(entries, list):
            return data
        names: list[Any] = []
        keys: dict[str, Any] = {}
        for entry in entries:
            if isinstance(entry, dict):
                unknown = sorted(str(k) for k in entry if k not in ("name", "key"))
                if unknown or "name" not in entry:
                    raise ValueError(
                        "an approver is a name or {name: NAME, key: 'ed25519:…'}"
                        + (f" (unknown: {_clip(', '.join(unknown), 40)})" if unknown else "")
                    )
                names.append(entry["name"])
                if "key" in entry and isinstance(entry["name"], str):
                    keys[entry["name"]] = entry["key"]
            else:
                names.append(entry)
        return {**data, "approvers": names, "keys": keys}

    @field_validator("approvers")
    @classmethod
    def _someone_approves(cls, value: list[str], info: ValidationInfo) -> list[str]:
        requiring = [key for key in ("mode", "index_refresh") if info.data.get(key) == "required"]
        if requiring and not value:
            raise ValueError(
                f"needs at least one approver when approval.{requiring[0]} is 'required'"
            )
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {_clip(', '.join(repeated), 60)} more than once")
        return value

    @property
    def development(self) -> bool:
        """Nobody decides (``mode`` and ``index_refresh`` auto): the embedded demo's policy."""
        return self.mode == "auto" and self.index_refresh == "auto" and not self.keys

    def key_of(self, name: str) -> str | None:
        """The public key the policy lists for approver ``name``, if any."""
        return self.keys.get(name) if name in self.approvers else None


#: What a notification channel may be told about.
NotifyEvent = Literal["blocked", "rejected", "failed", "approval_waiting", "champion_moved"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = (
    "blocked",
    "rejected",
    "failed",
    "approval_waiting",
    "champion_moved",
)


class NotifyChannel(_Strict):
    """One place to tell: an e-mail address list (through an Airflow SMTP connection) or a
    webhook that receives a JSON document."""

    name: Name
    type: Literal["email", "webhook"]
    #: e-mail: the recipients; the SMTP server is the Airflow connection ``smtp_conn_id``.
    to: list[str] = Field(default_factory=list, max_length=MAX_NAMES)
    smtp_conn_id: str = Field("smtp_default", max_length=200)
    from_email: str | None = Field(None, max_length=320)
    #: webhook: where the JSON document is POSTed (http or https).
    url: str | None = Field(None, max_length=2000)
    events: list[NotifyEvent] = Field(default_factory=lambda: list(NOTIFY_EVENTS))

    @model_validator(mode="after")
    def _target(self) -> NotifyChannel:
        if self.type == "email":
            if not self.to or any("@" not in address for address in self.to):
                raise ValueError(f"channel {self.name}: an email channel needs to: [addresses]")
        elif not self.url or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"channel {self.name}: a webhook channel needs url: http(s)://...")
        return self


class NotifyPolicy(_Strict):
    """Who is told when a run is BLOCKED, REJECTED or FAILED, an approval waits, or the
    champion moves."""

    channels: list[NotifyChannel] = Field(default_factory=list, max_length=MAX_ENTRIES)


class Policy(_Strict):
    """The whole ``governance.yml``."""

    version: Literal[1]
    owners: list[Name] = Field(default_factory=list, max_length=MAX_NAMES)
    #: Must hold every gate of :data:`MANDATORY_GATES` (default: exactly those), once each.
    required_gates: list[Gate] = Field(default_factory=_default_gates)
    #: The suites each data gate must run (gate → suite names). The gate runs them and any
    #: other suite file bound to it; a required suite whose file is missing or bound to
    #: another gate fails the gate. Optional: absent (or a gate left out), nothing is
    #: required beyond the suite files each gate finds.
    required_suites: dict[SuiteGate, Annotated[list[SuiteName], Field(max_length=MAX_ENTRIES)]] = (
        Field(default_factory=dict)
    )
    privacy: Privacy = Field(default_factory=lambda: Privacy())
    raw_data: RawDataPolicy = Field(default_factory=lambda: RawDataPolicy())
    training_data: TrainingDataPolicy = Field(default_factory=lambda: TrainingDataPolicy())
    severities: dict[Key, Literal["error", "warn"]] = Field(
        default_factory=dict, max_length=MAX_ENTRIES
    )
    evaluation: EvaluationPolicy = Field(default_factory=lambda: EvaluationPolicy())
    index: IndexPolicy = Field(default_factory=lambda: IndexPolicy())
    approval: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy())
    canary: CanaryPolicy = Field(default_factory=lambda: CanaryPolicy())
    notify: NotifyPolicy = Field(default_factory=lambda: NotifyPolicy())
    sha256: str = Field("", description="sha256 of the file's bytes; set by load_policy")
    path: str = Field("", description="where the policy was read from; set by load_policy")

    @field_validator("required_gates")
    @classmethod
    def _mandatory_gates(cls, value: list[str]) -> list[str]:
        missing = [gate for gate in MANDATORY_GATES if gate not in value]
        if missing:
            raise ValueError(
                f"must include every mandatory gate ({', '.join(MANDATORY_GATES)}); "
                f"missing: {', '.join(missing)}"
            )
        repeated = sorted({gate for gate in value if value.count(gate) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once")
        return value

    @field_validator("required_suites")
    @classmethod
    def _suites_once(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        listed = [name for names in value.values() for name in names]
        repeated = sorted({name for name in listed if listed.count(name) > 1})
        if repeated:
            raise ValueError(
                f"lists {_clip(', '.join(repeated), 60)} more than once "
                "(a suite runs in one gate, once)"
            )
        return value

    @property
    def warnings(self) -> list[str]:
        """Human-readable notes on settings that are allowed but weaker than advised."""
        notes = []
        k = self.privacy.k_anonymity
        if k < K_ANONYMITY_ADVISED:
            notes.append(
                f"privacy.k_anonymity is {k}: queries typed by as few as {k} people reach "
                f"training (at least {K_ANONYMITY_ADVISED} is advised)"
            )
        return notes

    def severity(self, check: str, default: Literal["error", "warn"] = "error") -> str:
        """The severity of a named check: the policy's override, else ``default``."""
        return self.severities.get(check, default)


def default_policy_path() -> Path:
    """``$SHELFGUARD_POLICY``, else ``governance.yml`` at the project root."""
    override = os.environ.get("SHELFGUARD_POLICY")
    return Path(override) if override else project_root() / "governance.yml"


def _clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters (``…`` marks a cut)."""
    head = text[: limit + 1]
    lines = head.splitlines() or [""]
    first = lines[0]
    if len(lines) > 1 or len(first) > limit or len(text) > len(head):
        return first[: limit - 1] + "…"
    return first


_ECHO = reprlib.Repr()
_ECHO.maxlevel = 2
_ECHO.maxstring = _ECHO.maxother = _ECHO.maxlong = ECHO_CHARS
_ECHO.maxdict = _ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxset = 4


def _echo(value: object) -> str:
    """A bounded one-line ``repr`` of (part of) the input, for error messages."""
    return _clip(_ECHO.repr(value))


def _describe(error: ValidationError, path: Path) -> str:
    items = error.errors()
    lines = []
    for item in items[:MAX_LISTED_ERRORS]:
        where = ".".join(_clip(str(part), 40) for part in item["loc"]) or "(top level)"
        message = _clip(str(item["msg"]).removeprefix("Value error, "), 2 * ECHO_CHARS)
        lines.append(f"  {where}: {message} (got {_echo(item.get('input'))})")
    if len(items) > MAX_LISTED_ERRORS:
        lines.append(f"  … and {len(items) - MAX_LISTED_ERRORS} more")
    return f"{path}: invalid policy\n" + "\n".join(lines)


def _refusal(problem: str, mark: Any) -> ComposerError:
    return ComposerError(None, None, problem, mark)


class _PolicyLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses anchors and aliases as the parser meets them (before
    any node is composed: an alias bomb costs nothing), deep nesting, and duplicate keys."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self._depth = 0

    def next_event(self, consume: bool = False) -> Any:
        """The parser's next event (typed for mypy; ``consume`` takes it off the stream)."""
        return self.get_event() if consume else self.peek_event()  # type: ignore[no-untyped-call]

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.next_event()
        if isinstance(event, yaml.AliasEvent):
            found = _clip(str(event.anchor), 40)
            raise _refusal(f"YAML aliases are not allowed (found *{found})", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            found = _clip(str(anchor), 40)
            raise _refusal(f"YAML anchors are not allowed (found &{found})", event.start_mark)
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _refusal(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _refusal("YAML merge keys (<<) are not allowed", key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the SafeConstructor refuses it itself
                continue
            if duplicate:
                raise _refusal(f"duplicate key {_echo(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The problem and where it is: never PyYAML's snippet of the input."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = "; ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return _clip(problem, 2 * ECHO_CHARS) + where
    return _clip(str(exc), 2 * ECHO_CHARS)


def _read_yaml(data: bytes, path: Path) -> object:
    """The one YAML document in ``data`` as Python objects (``None`` when empty)."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"{path}: the policy is {len(data)} bytes; at most {MAX_POLICY_BYTES} are accepted"
        )
    loader = _PolicyLoader(data)
    try:
        loader.next_event(consume=True)  # StreamStartEvent
        node = None if loader.check_event(yaml.StreamEndEvent) else loader.compose_document()
        if not loader.check_event(yaml.StreamEndEvent):
            raise _refusal(
                "a policy is one YAML document, but another one starts here",
                loader.next_event().start_mark,
            )
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise PolicyError(f"{path}: not valid YAML: {_clip(str(exc), 2 * ECHO_CHARS)}") from None
    finally:
        loader.dispose()


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate the policy file; raise :class:`PolicyError` with every problem listed.

    The policy's :attr:`Policy.warnings` are logged (``shelfguard.policy``, level WARNING).
    """
    path = path or default_policy_path()
    return _load(path, read_policy_bytes(path))


def read_policy_bytes(path: Path | None = None) -> bytes:
    """The policy file's bytes (at most one past :data:`MAX_POLICY_BYTES`, so that an
    oversized file is refused by :func:`parse_policy` without being read whole)."""
    path = path or default_policy_path()
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from exc


def load_policy_with_bytes(path: Path | None = None) -> tuple[Policy, bytes]:
    """Like :func:`load_policy`, and the very bytes it validated (to pin them)."""
    path = path or default_policy_path()
    data = read_policy_bytes(path)
    return _load(path, data), data


def _load(path: Path, data: bytes) -> Policy:
    policy = parse_policy(data, str(path))
    for warning in policy.warnings:
        logger.warning("%s: %s", path, warning)
    return policy


def parse_policy(data: bytes, source: str) -> Policy:
    """Validate a policy's bytes (read from ``source``: a path, or where they were pinned).

    The same bytes always give the same policy and the same ``sha256``: a run pins its
    policy by storing these bytes in the ledger and parses them again in every task.
    Raises :class:`PolicyError` for bytes over :data:`MAX_POLICY_BYTES`, YAML that is
    not one plain document (anchors, aliases, duplicate keys, several documents), and
    any value out of its range.
    """
    path = Path(source)
    raw = _read_yaml(data, path) or {}
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    for key in ("sha256", "path"):
        if key in raw:
            raise PolicyError(f"{path}: {key!r} is computed on load and cannot be set")
    if not all(isinstance(key, str) for key in raw):
        raise PolicyError(f"{path}: every top-level key must be a string")
    try:
        return Policy(**raw, sha256=hashlib.sha256(data).hexdigest(), path=source)
    except ValidationError as exc:
        # from None: pydantic's own text of the error would repeat every input again
        raise PolicyError(_describe(exc, path)) from None
