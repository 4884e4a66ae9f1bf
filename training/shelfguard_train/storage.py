"""Staging URIs in and out of the entry points: configs, inputs, outputs and results.

In production the orchestration side writes configs and reads results in object
storage (``SHELFGUARD_ARTIFACT_ROOT=s3://bucket/prefix``, any fsspec URL) and the
pod has no shared disk. The train, evaluate and embed functions only know local
paths, so the CLI runs each verb inside ``staged``::

    with staged(EmbedConfig, "s3://b/run/embed.json", "s3://b/run/result.json") as (
        config,
        finish,
    ):
        result = finish(embed(config).to_dict())

- ``--config`` and ``--result-out`` may be URIs (``s3://``, ``gs://``, ``memory://``,
  ``file://``, or any other fsspec protocol whose package is installed).
- Input path fields that are URIs (``_SPECS`` lists them per config class) are
  downloaded, file or whole folder, into a local staging folder before the run; the
  output field (``output_dir`` or ``output_path``) is pointed at a local folder there.
- Relative paths in a local config resolve against its folder (as ``load_config``
  does); in a URI config they resolve against the config URI's parent, so they are
  URIs too.
- ``finish(result)`` runs only after the verb succeeded: it uploads the outputs, then
  writes the result JSON (with the staged local paths replaced by their URIs) to
  ``result_ref`` **last**. The result JSON is the completion marker: on failure
  nothing is uploaded, and a reader that finds the result finds complete outputs.
  (fsspec has no atomic rename on object stores, where a "move" is copy + delete; a
  single-object PUT, though, is atomic, so the result and a single-file output are
  either there whole or not at all.)
- User errors (``ConfigError``, ``DataContractError``, ``EmbedError``) raised inside
  have the staged paths in their message replaced by the URIs they stand for.

A config whose path fields are all plain paths (and that is itself a plain path) is
read by ``load_config`` exactly as before: no staging folder is made. The staging
folder is a temporary directory, under ``$SHELFGUARD_STAGING_DIR`` when set, and is
removed when the run ends, successful or not. fsspec is imported only when a URI is
met.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shelfguard_train.config import (
    ConfigError,
    EmbedConfig,
    EvalConfig,
    TrainConfig,
    _parse,
    _relative_to,
    load_config,
)
from shelfguard_train.data import DataContractError
from shelfguard_train.evaluate import write_json
from shelfguard_train.index_format import EmbedError

__all__ = ["STAGING_DIR_ENV", "AnyConfig", "Finish", "is_uri", "staged", "write_result"]

log = logging.getLogger(__name__)

STAGING_DIR_ENV = "SHELFGUARD_STAGING_DIR"
# scheme:// or chained fsspec URLs such as simplecache::s3://
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_USER_ERRORS = (ConfigError, DataContractError, EmbedError)

AnyConfig = TypeVar("AnyConfig", TrainConfig, EvalConfig, EmbedConfig)
Finish = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class _Spec:
    """Which path fields of a config are read (inputs) and which one is written."""

    inputs: tuple[str, ...]
    output: str
    # The output file holds the result document itself (evaluate's report): it is
    # rewritten with the URIs before it is uploaded.
    output_is_result: bool = False


_SPECS: dict[type[Any], _Spec] = {
    TrainConfig: _Spec(inputs=("data_dir", "base_model"), output="output_dir"),
    # models: a mapping of name -> model folder; each value is an input.
    EvalConfig: _Spec(inputs=("data_dir", "models"), output="output_path", output_is_result=True),
    EmbedConfig: _Spec(
        inputs=("model_dir", "products_path", "golden_path", "previous_index_dir"),
        output="output_dir",
    ),
}


@dataclass(frozen=True)
class _Transfer:
    """One URI and the local path that stands for it during the run."""

    label: str
    uri: str
    local: Path


def is_uri(ref: str | os.PathLike[str]) -> bool:
    """Whether ``ref`` is an fsspec URL (``scheme://…``) rather than a plain path."""
    return isinstance(ref, str) and _URI.match(ref) is not None


@contextmanager
def staged(
    config_cls: type[AnyConfig],
    config_ref: str | os.PathLike[str],
    result_ref: str | os.PathLike[str] | None = None,
) -> Iterator[tuple[AnyConfig, Finish]]:
    """Load the config at ``config_ref`` with its URIs staged locally; yield it and ``finish``.

    Inputs are downloaded before the body runs (a missing one raises ``ConfigError``
    naming the URI). Call ``finish(result_dict)`` once the verb succeeded and before
    leaving the block: it uploads the output, writes the result (local paths replaced
    by URIs) to ``result_ref`` when given, and returns that result. If the body raises,
    nothing is uploaded or written.
    """
    stage = _Staging()
    try:
        config, inputs, outputs = _load(config_cls, config_ref, stage)
        # Fail now, before any download or hours of training, if a protocol is unusable.
        for transfer in inputs:
            _filesystem(transfer.uri, f"input {transfer.label}")
        for transfer in outputs:
            _filesystem(transfer.uri, f"output {transfer.label}")
        if result_ref is not None and is_uri(result_ref):
            _filesystem(str(result_ref), "--result-out")
        for transfer in inputs:
            _download(transfer, f"input {transfer.label}")
        spec = _SPECS[config_cls]

        def finish(result: Mapping[str, Any]) -> dict[str, Any]:
            payload: dict[str, Any] = stage.rewrite(dict(result))
            if spec.output_is_result and payload != result:
                write_json(Path(getattr(config, spec.output)), payload)
            for transfer in outputs:
                _upload(transfer)
            if result_ref is not None:
                write_result(result_ref, payload)
            return payload

        yield config, finish
    except _USER_ERRORS as exc:
        message = stage.to_uris(str(exc))
        if message == str(exc):
            raise
        raise type(exc)(message) from exc
    finally:
        stage.cleanup()


def write_result(ref: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as JSON to a plain path or a URI, whole or not at all.

    Local files (plain paths and ``file://``) are written to a temporary name and
    renamed; elsewhere a single-object PUT is atomic on the object stores.
    """
    if not is_uri(ref):
        write_json(Path(ref), payload)
        return
    uri = str(ref)
    fs, path = _filesystem(uri, "--result-out")
    if _is_local(fs):
        write_json(Path(path), payload)
    else:
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        fs.pipe_file(path, text.encode("utf-8"))
    log.info("wrote the result to %s", uri)


class _Staging:
    """The local staging folder (made on first use) and the local path -> URI map."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._count = 0
        self._aliases: list[tuple[str, str]] = []

    def slot(self, uri: str, name: str | None = None) -> Path:
        """A fresh local path (not yet existing) that stands for ``uri``."""
        if self._root is None:
            parent = os.environ.get(STAGING_DIR_ENV) or None
            if parent is not None:
                Path(parent).mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix="shelfguard-staging-", dir=parent))
            self._root = self._root.resolve()
        self._count += 1
        folder = self._root / f"{self._count:02d}"
        folder.mkdir()
        local = folder / (name or _basename(uri))
        self._aliases.append((str(local), uri))
        # Longest first, so a nested path never matches a shorter alias first.
        self._aliases.sort(key=lambda alias: len(alias[0]), reverse=True)
        return local

    def to_uris(self, text: str) -> str:
        """``text`` with every staged local path replaced by the URI it stands for."""
        for local, uri in self._aliases:
            text = text.replace(local, uri.rstrip("/"))
        return text

    def rewrite(self, value: Any) -> Any:
        """``to_uris`` applied to every string in a JSON-like value."""
        if isinstance(value, str):
            return self.to_uris(value)
        if isinstance(value, Mapping):
            return {key: self.rewrite(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.rewrite(item) for item in value]
        return value

    def cleanup(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


def _load(
    config_cls: type[AnyConfig], config_ref: str | os.PathLike[str], stage: _Staging
) -> tuple[AnyConfig, list[_Transfer], list[_Transfer]]:
    """The config with URIs replaced by staging paths, and the inputs and outputs to move."""
    spec = _SPECS[config_cls]
    base: str | Path
    if is_uri(config_ref):
        base = str(config_ref)
        source = stage.slot(base)
        _download(_Transfer("config", base, source), "config file", folder=False)
        try:
            raw = _parse(source, source.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text ({exc.reason})") from exc
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: the config must be a mapping of keys to values")
    else:
        base = Path(config_ref)
        try:
            raw = _parse(base, base.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ConfigError):
            raw = None
        if not isinstance(raw, Mapping) or not _mentions_uri(raw, spec):
            # Plain paths only (or unreadable: load_config reports it as it always has).
            return load_config(base, config_cls), [], []
    values, inputs, outputs = _plan(raw, spec, base, stage)
    rewritten = stage.slot(str(config_ref), "config.json")
    try:
        text = json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config_ref}: a value is not plain JSON data ({exc})") from exc
    rewritten.write_text(text, encoding="utf-8")
    return load_config(rewritten, config_cls), inputs, outputs


def _mentions_uri(raw: Mapping[str, Any], spec: _Spec) -> bool:
    for name in (*spec.inputs, spec.output):
        value = raw.get(name)
        values = value.values() if isinstance(value, Mapping) else [value]
        if any(isinstance(v, str) and is_uri(v) for v in values):
            return True
    return False


def _plan(
    raw: Mapping[str, Any], spec: _Spec, base: str | Path, stage: _Staging
) -> tuple[dict[str, Any], list[_Transfer], list[_Transfer]]:
    """Resolve every path field; give each URI a staging path. Other keys pass as they are."""
    values = dict(raw)
    inputs: list[_Transfer] = []
    outputs: list[_Transfer] = []

    def place(label: str, value: Any, moves: list[_Transfer]) -> Any:
        if not isinstance(value, str) or not value.strip():
            return value  # load_config rejects it with its usual message
        where = _locate(value, base)
        if not is_uri(where):
            return where
        local = stage.slot(where)
        moves.append(_Transfer(label, where, local))
        return str(local)

    for name in spec.inputs:
        value = values.get(name)
        if isinstance(value, Mapping):
            values[name] = {k: place(f"{name}.{k}", v, inputs) for k, v in value.items()}
        elif name in values:
            values[name] = place(name, value, inputs)
    if spec.output in values:
        values[spec.output] = place(spec.output, values[spec.output], outputs)
    return values, inputs, outputs


def _locate(value: str, base: str | Path) -> str:
    """The URI or absolute local path that ``value`` names in a config located at ``base``."""
    if is_uri(value):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if isinstance(base, Path):
        return str(_relative_to(base, value))
    scheme, _, rest = base.partition("://")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rest), value))
    return f"{scheme}://{joined}"


def _basename(uri: str) -> str:
    return posixpath.basename(uri.partition("://")[2].rstrip("/")) or "root"


def _filesystem(uri: str, what: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for ``uri``; ``ConfigError`` if unusable."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise ConfigError(f"{what} {uri}: URIs need the fsspec package") from exc
    try:
        fs, path = url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        # e.g. "Install s3fs to access S3", "Protocol not known: foo"
        raise ConfigError(f"{what} {uri}: {exc}") from exc
    return fs, str(path)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _download(transfer: _Transfer, what: str, folder: bool = True) -> None:
    """Copy the file or folder at ``transfer.uri`` to ``transfer.local``."""
    fs, path = _filesystem(transfer.uri, what)
    try:
        kind = fs.info(path).get("type")
        if kind == "directory" and folder:
            remote = _files_under(fs, path, transfer.uri)
            local = [transfer.local.joinpath(*rel.split("/")) for _, rel in remote]
            transfer.local.mkdir(parents=True, exist_ok=True)
            for file in local:
                file.parent.mkdir(parents=True, exist_ok=True)
            if remote:
                fs.get([r for r, _ in remote], [str(file) for file in local])
            log.info("staged %s (%d files) at %s", transfer.uri, len(remote), transfer.local)
        elif kind == "directory":
            raise ConfigError(f"{what} {transfer.uri} is a folder, not a file")
        else:
            fs.get_file(path, str(transfer.local))
            log.info("staged %s at %s", transfer.uri, transfer.local)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} not found: {transfer.uri}") from exc
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {transfer.uri} ({exc})") from exc


def _files_under(fs: Any, root: str, uri: str) -> list[tuple[str, str]]:
    """(remote path, relative POSIX path) of every file below ``root``, sorted."""
    prefix = root.rstrip("/") + "/"
    files: list[tuple[str, str]] = []
    for name in sorted(str(entry) for entry in fs.find(root, withdirs=False)):
        if not name.startswith(prefix):
            raise ConfigError(f"{uri}: listing returned {name}, which is not below it")
        rel = name[len(prefix) :]
        if not rel or rel.endswith("/"):
            continue  # a "directory marker" object
        if any(part in {"", ".", ".."} for part in rel.split("/")):
            raise ConfigError(f"{uri}: refusing to stage {name!r}, an unsafe relative path")
        files.append((name, rel))
    return files


def _upload(transfer: _Transfer) -> None:
    """Copy the run's local output to its URI, replacing what the run produced there.

    A file output is one object. For a folder, each top-level sub-folder the run wrote
    (e.g. train's ``model/``) first has its remote counterpart removed, so no stale
    file of an older run stays inside it; top-level files are overwritten; nothing
    else at the URI is touched.
    """
    fs, path = _filesystem(transfer.uri, f"output {transfer.label}")
    local = transfer.local
    if local.is_file():
        _put(fs, [(local, path)])
    elif local.is_dir():
        for entry in sorted(local.iterdir()):
            target = posixpath.join(path, entry.name)
            if entry.is_dir() and fs.exists(target):
                fs.rm(target, recursive=True)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        _put(fs, [(p, posixpath.join(path, p.relative_to(local).as_posix())) for p in files])
    else:
        raise RuntimeError(f"the run wrote nothing at {local} for {transfer.uri}")
    log.info("uploaded %s to %s", local, transfer.uri)


def _put(fs: Any, pairs: list[tuple[Path, str]]) -> None:
    if not pairs:
        return
    if _is_local(fs):
        # Each file renamed into place: a reader never sees half of one.
        for source, target in pairs:
            destination = Path(target)
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(destination.name + ".partial")
            shutil.copyfile(source, partial)
            os.replace(partial, destination)
        return
    # Lists: async filesystems (s3fs, gcsfs) copy them concurrently.
    fs.put([str(source) for source, _ in pairs], [target for _, target in pairs])
