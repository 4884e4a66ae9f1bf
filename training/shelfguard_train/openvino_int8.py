"""An int8 CPU encoder: a sentence-transformers model exported to OpenVINO, quantised by NNCF.

``export_int8`` converts the model's transformer to an OpenVINO IR with dynamic batch and
sequence dimensions, quantises it statically (NNCF, calibrated on catalog texts) and
saves the IR, the tokenizer and ``int8.json`` (what the folder is: the IR's sha256, the
source model's sha256, pooling, maximum sequence length, calibration) to one folder. The
same model and texts give the same IR bytes.

``load_int8`` reads that folder back and ``encode_int8`` encodes texts with it: batches
of similar token length, fp32 inference precision on the CPU (int8 where NNCF quantised),
the model's pooling done here, L2-normalised float32 vectors in input order. Batches
hold texts of one token length, unpadded, so a text's vector does not depend on the
batch it is encoded in (bit-identical).

The torch encoder, :func:`shelfguard_train.encode.encode_texts`, is the fallback where
openvino or nncf is not installed (:class:`OpenVinoUnavailableError`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shelfguard_train.encode import length_batches, log_progress, token_lengths
from shelfguard_train.hashing import files_sha256

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_CALIBRATION_SIZE",
    "IR_FILES",
    "METADATA_FILE",
    "POOLING_MODES",
    "Int8Encoder",
    "Int8Error",
    "Int8Export",
    "OpenVinoUnavailableError",
    "encode_int8",
    "export_int8",
    "import_openvino",
    "load_int8",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_FILE = "int8.json"
IR_XML = "model.xml"
IR_BIN = "model.bin"
#: The IR's files, in the order ``ir_sha256`` hashes them.
IR_FILES = (IR_XML, IR_BIN)
TOKENIZER_DIR = "tokenizer"
#: The pooling modes encode_int8 applies (sentence-transformers' names).
POOLING_MODES = ("mean", "cls")
DEFAULT_CALIBRATION_SIZE = 300
#: fp32 for the layers NNCF left in float: no bf16 on a CPU with AMX, so vectors do not
#: depend on which CPU encodes them.
_COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
_REQUIRED_INPUTS = ("input_ids", "attention_mask")
_OPTIONAL_INPUTS = ("token_type_ids",)


class OpenVinoUnavailableError(ImportError):
    """openvino or nncf cannot be imported; the torch encoder (``encode_texts``) is the fallback."""


class Int8Error(ValueError):
    """A model that cannot be exported to int8, or a folder that is not an int8 export."""


@dataclass(frozen=True)
class Int8Export:
    """An exported int8 model: its folder, the IR's sha256 and ``int8.json``'s content."""

    out_dir: Path
    ir_sha256: str
    metadata: dict[str, Any]


@dataclass
class Int8Encoder:
    """A compiled int8 model with the tokenizer and pooling it was exported with."""

    compiled: Any
    tokenizer: PreTrainedTokenizerBase
    input_names: tuple[str, ...]
    max_seq_length: int
    pooling_mode: str
    do_lower_case: bool
    dimension: int
    metadata: dict[str, Any]


def import_openvino(need_nncf: bool) -> tuple[Any, Any]:
    """``(openvino, nncf)``; ``nncf`` is None when not needed; :class:`OpenVinoUnavailableError`
    when either cannot be imported."""
    what = "openvino and nncf" if need_nncf else "openvino"
    try:
        import openvino

        quantizer = importlib.import_module("nncf") if need_nncf else None
    except ImportError as exc:
        raise OpenVinoUnavailableError(
            f"the int8 encoder needs {what}, which cannot be imported ({exc}); install the "
            "training package with its pins (pip install -c constraints.txt ./training) or "
            "encode with the torch encoder (shelfguard_train.encode.encode_texts)"
        ) from exc
    return openvino, quantizer


def _pooling_mode(model: SentenceTransformer) -> str:
    """The model's pooling mode, refusing module stacks encode_int8 does not reproduce."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    modules = list(model)
    if len(modules) < 2 or not isinstance(modules[0], Transformer):
        raise Int8Error("int8 export needs a Transformer module followed by a Pooling module")
    pooling = modules[1]
    if not isinstance(pooling, Pooling):
        raise Int8Error(
            f"int8 export needs a Pooling module after the Transformer, got {type(pooling).__name__}"
        )
    extra = [type(m).__name__ for m in modules[2:] if not isinstance(m, Normalize)]
    if extra:
        raise Int8Error(f"int8 export does not support the modules {', '.join(extra)}")
    config = pooling.get_config_dict()
    mode = config.get("pooling_mode")
    if not isinstance(mode, str) or mode not in POOLING_MODES:
        raise Int8Error(
            f"int8 export supports the pooling modes {', '.join(POOLING_MODES)}, "
            f"the model uses {mode!r}"
        )
    if config.get("include_prompt", True) is not True:
        raise Int8Error("int8 export does not support pooling that excludes the prompt")
    return mode


def _token_embeddings_module(auto_model: torch.nn.Module) -> torch.nn.Module:
    """The transformer with one output, the last hidden state (token embeddings)."""
    import torch

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden: torch.Tensor = self.inner(**kwargs, return_dict=True).last_hidden_state
            return hidden

    return TokenEmbeddings(auto_model).eval()


def _calibration_sample(texts: Sequence[str], size: int) -> list[str]:
    """Up to ``size`` texts spread evenly over ``texts`` (all of them when fewer)."""
    if size < 1:
        raise Int8Error(f"calibration_size must be positive, got {size}")
    if len(texts) <= size:
        return list(texts)
    return [texts[i * len(texts) // size] for i in range(size)]


def _tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_seq_length: int,
    do_lower_case: bool,
    input_names: Sequence[str],
) -> dict[str, npt.NDArray[np.int64]]:
    """The IR's inputs for ``texts``, padded to the longest, as sentence-transformers does."""
    batch = [text.lower() for text in texts] if do_lower_case else list(texts)
    encoded = tokenizer(
        batch,
        padding=True,
        truncation="longest_first",
        max_length=max_seq_length,
        return_tensors="np",
    )
    return {name: np.asarray(encoded[name], dtype=np.int64) for name in input_names}


def export_int8(
    model: SentenceTransformer,
    calibration_texts: Sequence[str],
    out_dir: Path,
    *,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    source_model_sha256: str | None = None,
) -> Int8Export:
    """Export ``model`` as a statically quantised int8 OpenVINO IR to ``out_dir``.

    The transformer (``model[0].auto_model``) is converted with the tokenizer's inputs
    and dynamic batch and sequence dimensions; NNCF quantises it (transformer preset)
    with statistics from up to ``calibration_size`` of ``calibration_texts``, spread
    evenly over them and run one text at a time. The IR (``model.xml``, ``model.bin``;
    float weights NNCF keeps stay fp32), the tokenizer and ``int8.json`` are written to
    ``out_dir``. The same model, texts and size give the same IR bytes: ``int8.json``
    records their sha256 (``ir_sha256``) beside ``source_model_sha256`` when given, the
    tokenizer's sha256 and the sha256 of the calibration texts used.

    Raises :class:`Int8Error` for a model whose pooling or modules encode_int8 does not
    reproduce (only mean and CLS pooling, optionally followed by Normalize) and
    :class:`OpenVinoUnavailableError` when openvino or nncf is missing.
    """
    import torch
    from transformers import PreTrainedTokenizerBase

    ov, nncf = import_openvino(need_nncf=True)
    pooling_mode = _pooling_mode(model)
    transformer = model[0]
    tokenizer = transformer.tokenizer
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise Int8Error("int8 export needs a transformers tokenizer")
    max_seq_length = model.max_seq_length
    if max_seq_length is None:
        raise Int8Error("int8 export needs a model with a max_seq_length")
    names = tuple(tokenizer.model_input_names)
    missing = [name for name in _REQUIRED_INPUTS if name not in names]
    if missing:
        raise Int8Error(f"the tokenizer does not produce {', '.join(missing)}")
    input_names = (*_REQUIRED_INPUTS, *(n for n in _OPTIONAL_INPUTS if n in names))
    do_lower_case = bool(getattr(transformer, "do_lower_case", False))
    dimension = model.get_embedding_dimension()
    if dimension is None:
        raise Int8Error("the model does not declare its embedding dimension")
    sample = _calibration_sample(calibration_texts, calibration_size)
    if not sample:
        raise Int8Error("int8 export needs at least one calibration text")

    def features(texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        return _tokenize(tokenizer, texts, max_seq_length, do_lower_case, input_names)

    example = {name: torch.from_numpy(array) for name, array in features(sample[:2]).items()}
    auto_model = transformer.auto_model
    if not isinstance(auto_model, torch.nn.Module):
        raise Int8Error("int8 export needs a torch transformer (model[0].auto_model)")
    module = _token_embeddings_module(auto_model)
    with torch.no_grad(), warnings.catch_warnings():
        # The trace fixes which attention-mask branch runs (the mask is always given and
        # as long as the input), which is what these warnings are about.
        # (Matched by their message: torch exports no public name for their class.)
        warnings.filterwarnings("ignore", message=r".*the trace (to be|might be) incorrect")
        ov_model = ov.convert_model(
            module,
            example_input=example,
            input=[(name, ov.PartialShape([-1, -1]), ov.Type.i64) for name in input_names],
        )
    ov_model.outputs[0].get_tensor().set_names({"token_embeddings"})
    started = time.perf_counter()
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset([features([text]) for text in sample]),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(sample),
    )
    log.info(
        "quantised to int8 on %d calibration texts in %.1f s",
        len(sample),
        time.perf_counter() - started,
    )
    _stable_names(quantized)
    out_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out_dir / IR_XML, compress_to_fp16=False)
    tokenizer.save_pretrained(str(out_dir / TOKENIZER_DIR))
    ir_sha256 = files_sha256(out_dir, IR_FILES)
    metadata: dict[str, Any] = {
        "tokenizer_sha256": _tokenizer_sha256(out_dir),
        "format": FORMAT_VERSION,
        "ir_sha256": ir_sha256,
        "source_model_sha256": source_model_sha256,
        "input_names": list(input_names),
        "pooling_mode": pooling_mode,
        "normalize": True,
        "max_seq_length": max_seq_length,
        "do_lower_case": do_lower_case,
        "dimension": int(dimension),
        "calibration": {
            "texts": len(sample),
            "texts_sha256": _texts_sha256(sample),
        },
        "inference_precision": "f32",
        "versions": {"openvino": ov.get_version(), "nncf": nncf.__version__},
    }
    (out_dir / METADATA_FILE).write_text(
        json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return Int8Export(out_dir=out_dir, ir_sha256=ir_sha256, metadata=metadata)


def _stable_names(ov_model: Any) -> None:
    """Replace the names OpenVINO generates from a process-wide counter (``Constant_250096``)
    by the op's position in the graph, so a second export in one process writes the same
    bytes. Names from the source model (``__module.inner.encoder...``) are kept."""
    ov_model.set_friendly_name("shelfguard_int8")
    for position, op in enumerate(ov_model.get_ordered_ops()):
        kind = op.get_type_name()
        if re.fullmatch(rf"{re.escape(kind)}_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{kind}_{position}")


def _tokenizer_sha256(out_dir: Path) -> str:
    root = out_dir / TOKENIZER_DIR
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return files_sha256(root, names)


def _texts_sha256(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.hexdigest()


def load_int8(out_dir: Path, *, num_threads: int | None = None) -> Int8Encoder:
    """Compile the int8 IR in ``out_dir`` for the CPU, with the fp32 inference precision hint.

    Checks the IR's and the tokenizer's bytes against the sha256 recorded by
    :func:`export_int8` (:class:`Int8Error` when they differ or the folder is not an
    export). The tokenizer
    is read from the folder, never downloaded. ``num_threads`` limits OpenVINO's threads
    (default: all cores).
    """
    from transformers import AutoTokenizer

    ov, _ = import_openvino(need_nncf=False)
    metadata_path = out_dir / METADATA_FILE
    if not metadata_path.is_file():
        raise Int8Error(f"{out_dir} is not an int8 export: {METADATA_FILE} is missing")
    metadata: dict[str, Any] = json.loads(metadata_path.read_text(encoding="utf-8"))
    if metadata.get("format") != FORMAT_VERSION:
        raise Int8Error(f"{metadata_path}: unknown format {metadata.get('format')!r}")
    actual = files_sha256(out_dir, IR_FILES)
    if actual != metadata["ir_sha256"]:
        raise Int8Error(
            f"{out_dir}: the IR's sha256 is {actual}, {METADATA_FILE} records "
            f"{metadata['ir_sha256']}"
        )
    tokenizer_sha256 = _tokenizer_sha256(out_dir)
    if tokenizer_sha256 != metadata.get("tokenizer_sha256"):
        raise Int8Error(
            f"{out_dir}: the tokenizer's sha256 is {tokenizer_sha256}, {METADATA_FILE} "
            f"records {metadata.get('tokenizer_sha256')}"
        )
    config: dict[str, Any] = dict(_COMPILE_CONFIG)
    if num_threads is not None:
        config["INFERENCE_NUM_THREADS"] = num_threads
    core = ov.Core()
    compiled = core.compile_model(core.read_model(out_dir / IR_XML), "CPU", config)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir / TOKENIZER_DIR), local_files_only=True)
    return Int8Encoder(
        compiled=compiled,
        tokenizer=tokenizer,
        input_names=tuple(metadata["input_names"]),
        max_seq_length=int(metadata["max_seq_length"]),
        pooling_mode=str(metadata["pooling_mode"]),
        do_lower_case=bool(metadata["do_lower_case"]),
        dimension=int(metadata["dimension"]),
        metadata=metadata,
    )


def encode_int8(
    encoder: Int8Encoder, texts: Sequence[str], batch_size: int = 64
) -> npt.NDArray[np.float32]:
    """L2-normalised float32 embeddings of ``texts`` with the int8 model, in input order.

    Like :func:`shelfguard_train.encode.encode_texts`, texts are taken in order of their
    token count (after truncation), stable, and throughput is logged every few batches;
    unlike it, a batch holds texts of one token length only, so nothing is padded and a
    text's vector is bit-identical whether it is encoded alone or among others (see
    :func:`shelfguard_train.encode.length_batches`). Pooling and normalisation run in numpy on the token embeddings.
    """
    total = len(texts)
    if total == 0:
        return np.empty((0, encoder.dimension), dtype=np.float32)
    lengths = _token_lengths(encoder, texts)
    order = np.argsort(-lengths, kind="stable")
    vectors = np.empty((total, encoder.dimension), dtype=np.float32)
    request = encoder.compiled.create_infer_request()
    started = time.perf_counter()
    plan = list(length_batches(order, lengths, batch_size, equal_lengths=True))
    done = 0
    for batch, rows in enumerate(plan, start=1):
        inputs = _tokenize(
            encoder.tokenizer,
            [texts[i] for i in rows.tolist()],
            encoder.max_seq_length,
            encoder.do_lower_case,
            encoder.input_names,
        )
        request.infer(inputs)
        hidden = np.asarray(request.get_output_tensor(0).data, dtype=np.float32)
        vectors[rows] = _pool(hidden, inputs["attention_mask"], encoder.pooling_mode)
        done += len(rows)
        log_progress(batch, len(plan), done, total, started, " (int8)")
    return vectors


def _pool(
    hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64], mode: str
) -> npt.NDArray[np.float32]:
    """Pooled, L2-normalised rows, as sentence-transformers' Pooling and Normalize do."""
    if mode == "cls":
        pooled = hidden[:, 0, :]
    else:
        weights = mask.astype(np.float32)[:, :, None]
        summed = (hidden * weights).sum(axis=1)
        counts = np.maximum(weights.sum(axis=1), np.float32(1e-9))
        pooled = summed / counts
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
    result: npt.NDArray[np.float32] = (pooled / norms).astype(np.float32, copy=False)
    return result


def _token_lengths(encoder: Int8Encoder, texts: Sequence[str]) -> npt.NDArray[np.int64]:
    return token_lengths(
        encoder.tokenizer, texts, encoder.max_seq_length, lowercase=encoder.do_lower_case
    )
