"""The encoder of an index: the torch model (fp32 or bf16) or its int8 OpenVINO export.

An index, the evaluation that judged its model and the search that serves it must
encode with the same encoder. ``open_encoder`` gives the one a precision names:

- ``fp32``, ``bf16`` and ``auto``: the sentence-transformers model under torch
  (:func:`shelfguard_train.encode.encode_texts`, autocast for bf16);
- ``int8``: the model exported by :func:`shelfguard_train.openvino_int8.export_int8`,
  quantised on catalog texts, kept in an ``encoder/`` folder beside the index (or the
  evaluation) with its own sha256 (``int8.json``'s ``ir_sha256``) and the sha256 of the
  model it was exported from. A folder that already holds the export of this model is
  read back, not exported again.

``int8`` needs openvino and nncf on the CPU. Where they are missing, or the run is on
a GPU, :func:`resolve_precision` falls back to torch (``auto``) and says why; a
precision that an existing index or its encoder fixes is never silently changed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shelfguard_train.encode import embedding_dimension, encode_texts
from shelfguard_train.index_format import EmbedError, index_precision
from shelfguard_train.model import (
    Runtime,
    inference_runtime,
    load_model,
    model_sha256,
    resolve_runtime,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from shelfguard_train.openvino_int8 import Int8Encoder

__all__ = [
    "ENCODER_DIR",
    "INT8",
    "TextEncoder",
    "encoder_check",
    "encoder_files_sha256",
    "int8_unavailable",
    "open_encoder",
    "open_index_encoder",
    "resolve_precision",
]

log = logging.getLogger(__name__)

INT8 = "int8"
#: The folder, inside an index or beside an evaluation, that holds an int8 export.
ENCODER_DIR = "encoder"


@dataclass
class TextEncoder:
    """A model ready to encode texts at one precision.

    ``model`` is always the loaded sentence-transformers model (its dimension, its
    fp32 fallback); ``int8`` is its OpenVINO export when the precision is int8.
    ``fallback`` says why a requested int8 runs on torch instead.
    """

    model: SentenceTransformer
    runtime: Runtime
    int8: Int8Encoder | None = None
    fallback: str | None = None
    folder: Path | None = None

    @property
    def precision(self) -> str:
        """``int8``, ``bf16`` or ``fp32``: what the vectors were computed in."""
        return INT8 if self.int8 is not None else self.runtime.precision

    @property
    def backend(self) -> str:
        """``openvino`` for the int8 export, else ``torch``."""
        return "openvino" if self.int8 is not None else "torch"

    @property
    def dimension(self) -> int:
        """The embedding dimension."""
        return embedding_dimension(self.model)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, *, equal_lengths: bool = False
    ) -> npt.NDArray[np.float32]:
        """L2-normalised float32 vectors of ``texts``, in input order.

        ``equal_lengths`` batches only texts of one token length under torch too, so a
        text's vector does not depend on the texts it is batched with (the int8 encoder
        always does).
        """
        if self.int8 is not None:
            from shelfguard_train.openvino_int8 import encode_int8

            return encode_int8(self.int8, texts, batch_size)
        return encode_texts(
            self.model, texts, batch_size, self.runtime, equal_lengths=equal_lengths
        )

    def describe(self) -> dict[str, Any]:
        """What encoded: backend, precision, the export's sha256 (its IR), the sha256 of
        every file of its folder, its source model's sha256 and calibration (None under
        torch), and the fallback reason (None when none)."""
        metadata = self.int8.metadata if self.int8 is not None else {}
        return {
            "backend": self.backend,
            "precision": self.precision,
            "sha256": metadata.get("ir_sha256"),
            "files_sha256": encoder_files_sha256(self.folder) if self.int8 is not None else None,
            "source_model_sha256": metadata.get("source_model_sha256"),
            "calibration": metadata.get("calibration"),
            "fallback": self.fallback,
        }


def encoder_files_sha256(folder: Path | None) -> str | None:
    """sha256 over every file of an int8 encoder folder (IR, tokenizer, ``int8.json``)."""
    if folder is None or not folder.is_dir():
        return None
    return model_sha256(folder, exclude=())


def int8_unavailable(device: str, *, export: bool = True) -> str | None:
    """Why int8 cannot encode on ``device`` here, or None when it can. ``export`` also
    needs nncf (quantising a new export); reading an existing one needs openvino only."""
    if resolve_runtime(device).device != "cpu":
        return "the int8 encoder runs on the CPU and this run has a CUDA device"
    from shelfguard_train.openvino_int8 import OpenVinoUnavailableError, import_openvino

    try:
        import_openvino(need_nncf=export)
    except OpenVinoUnavailableError as exc:
        return str(exc)
    return None


def resolve_precision(
    requested: str, device: str, *, fixed: bool = False
) -> tuple[str, str | None]:
    """The precision to encode with and, when int8 falls back to torch, why.

    ``fixed`` means the precision cannot change (an incremental refresh or a search of
    an int8 index, which read its existing export): then an unavailable int8 is an
    :class:`EmbedError`, not a fallback.
    """
    if requested != INT8:
        return requested, None
    reason = int8_unavailable(device, export=not fixed)
    if reason is None:
        return INT8, None
    if fixed:
        raise EmbedError(f"this index is encoded in int8, which cannot run here: {reason}")
    log.warning("int8 requested, encoding with torch instead: %s", reason)
    return "auto", reason


def open_encoder(
    model_dir: Path,
    precision: str,
    *,
    device: str = "auto",
    max_seq_length: int | None = None,
    source_sha256: str | None = None,
    encoder_dir: Path | None = None,
    calibration_texts: Sequence[str] | None = None,
    model: SentenceTransformer | None = None,
    fallback: str | None = None,
) -> TextEncoder:
    """The encoder of ``model_dir`` at ``precision`` (already resolved: see
    :func:`resolve_precision`).

    For int8, ``encoder_dir`` holds the export: read back when its ``int8.json`` names
    ``source_sha256`` (the model's sha256) as its source, else exported there from ``calibration_texts``
    (:class:`EmbedError` when there are none, or the folder belongs to another model or
    fails its sha256). ``model`` is ``model_dir`` already loaded.
    """
    runtime = inference_runtime(device, precision)
    if model is None:
        model = load_model(model_dir, runtime, max_seq_length)
    encoder = TextEncoder(model=model, runtime=runtime, fallback=fallback)
    if precision != INT8:
        return encoder
    if encoder_dir is None:
        raise EmbedError("an int8 encoder needs a folder to read or write its export")
    from shelfguard_train.openvino_int8 import METADATA_FILE, Int8Error, export_int8, load_int8

    metadata_path = encoder_dir / METADATA_FILE
    try:
        if not metadata_path.is_file():
            if calibration_texts is None:
                raise EmbedError(f"{encoder_dir}: no int8 encoder ({METADATA_FILE} is missing)")
            log.info("exporting the int8 encoder to %s", encoder_dir)
            export_int8(model, calibration_texts, encoder_dir, source_model_sha256=source_sha256)
        source = json.loads(metadata_path.read_text(encoding="utf-8")).get("source_model_sha256")
        if source_sha256 is not None and source != source_sha256:
            raise EmbedError(
                f"{encoder_dir}: the int8 encoder was exported from model sha256 {source}, "
                f"this model has sha256 {source_sha256}"
            )
        encoder.int8 = load_int8(encoder_dir)
        encoder.folder = encoder_dir
    except (Int8Error, json.JSONDecodeError) as exc:
        raise EmbedError(f"{encoder_dir}: the int8 encoder cannot be used: {exc}") from exc
    return encoder


def open_index_encoder(
    index_dir: Path,
    model_dir: Path,
    manifest: dict[str, Any],
    *,
    device: str = "auto",
    source_sha256: str | None = None,
    found: dict[str, Any] | None = None,
) -> TextEncoder:
    """The encoder an index's vectors were computed with, to encode queries against it.

    A torch index gets the model at its precision; an int8 index its own ``encoder/``
    folder, whose files must hash to what the manifest records (:class:`EmbedError`
    otherwise, and when int8 cannot run here: its vectors allow no other encoder).
    ``found`` is :func:`encoder_check`'s result when the caller has it already (the
    folder is then not hashed again).
    """
    precision = index_precision(manifest)
    if precision == INT8:
        resolve_precision(INT8, device, fixed=True)
        found = found or encoder_check(index_dir, manifest)
        if not found["matches"]:
            raise EmbedError(
                f"{index_dir / ENCODER_DIR}: the int8 encoder's files hash to "
                f"{found['actual_sha256']}, the index manifest records {found['manifest_sha256']}"
            )
    return open_encoder(
        model_dir,
        precision,
        device=device,
        max_seq_length=manifest.get("max_seq_length"),
        source_sha256=source_sha256,
        encoder_dir=index_dir / ENCODER_DIR,
    )


def encoder_check(index_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The index's encoder as recorded and as found: backend, precision, fallback, the
    recorded and actual sha256 of an int8 encoder's files, its source model, and whether
    the files match (always true for a torch index, which has no encoder files)."""
    recorded = manifest.get("encoder") or {}
    precision = index_precision(manifest)
    actual = encoder_files_sha256(index_dir / ENCODER_DIR) if precision == INT8 else None
    return {
        "backend": recorded.get("backend", "torch"),
        "precision": precision,
        "fallback": recorded.get("fallback"),
        "manifest_sha256": recorded.get("files_sha256"),
        "actual_sha256": actual,
        "sha256": recorded.get("sha256"),
        "source_model_sha256": recorded.get("source_model_sha256"),
        "matches": precision != INT8
        or (actual is not None and actual == recorded.get("files_sha256")),
    }
