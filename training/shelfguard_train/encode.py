"""Encoding texts into L2-normalised float32 vectors, and the precision an index run encodes in.

``encode_texts`` is what ``embed`` runs over the catalog, ``check_index`` over the
canary queries and ``CatalogSearcher`` over a shopper's query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shelfguard_train.config import EmbedConfig
from shelfguard_train.index_format import EmbedError, index_precision
from shelfguard_train.model import Runtime

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "embedding_dimension",
    "encode_precision",
    "encode_texts",
    "length_batches",
    "log_progress",
    "token_lengths",
]

log = logging.getLogger(__name__)

_LOG_EVERY_BATCHES = 20
_LENGTH_CHUNK = 10_000


def encode_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int = 64,
    runtime: Runtime | None = None,
    *,
    equal_lengths: bool = False,
) -> npt.NDArray[np.float32]:
    """L2-normalised float32 embeddings of ``texts``, one row per text, in input order.

    Equivalent to ``model.encode(texts, normalize_embeddings=True)`` but faster on a
    catalog: texts are batched in order of their token count (after truncation to the
    model's ``max_seq_length``), so a batch pads to almost nothing; batches run under
    ``torch.inference_mode()`` and stay on the device until one copy to numpy at the end.
    Logs throughput every few batches. ``equal_lengths`` pads nothing at all (a batch
    holds texts of one token length), so a text's vector does not depend on the texts it
    is batched with: what a service batching its requests needs.
    """
    import torch

    runtime = runtime or Runtime(device=str(model.device.type))
    total = len(texts)
    dim = embedding_dimension(model)
    if total == 0:
        return np.empty((0, dim), dtype=np.float32)
    # Stable, so equal lengths keep input order and a rerun batches identically (on CPU
    # the same batches give the same bytes).
    lengths = _token_lengths(model, texts)
    order = np.argsort(-lengths, kind="stable")
    model.eval()
    out = torch.empty((total, dim), dtype=torch.float32, device=runtime.device)
    started = time.perf_counter()
    plan = list(length_batches(order, lengths, batch_size, equal_lengths=equal_lengths))
    start = 0
    with torch.inference_mode(), runtime.autocast():
        for batch, rows in enumerate(plan, start=1):
            features = model.preprocess([texts[i] for i in rows.tolist()])
            features = {
                k: v.to(runtime.device) if isinstance(v, torch.Tensor) else v
                for k, v in features.items()
            }
            embeddings = model(features)["sentence_embedding"].float()
            out[start : start + len(rows)] = torch.nn.functional.normalize(embeddings, dim=1)
            start += len(rows)
            log_progress(batch, len(plan), start, total, started)
    vectors = np.empty((total, dim), dtype=np.float32)
    vectors[order] = out.cpu().numpy()
    return vectors


def length_batches(
    order: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    batch_size: int,
    *,
    equal_lengths: bool,
) -> Iterator[npt.NDArray[np.int64]]:
    """Rows of ``order`` (texts sorted by token length) in batches of at most ``batch_size``.

    With ``equal_lengths`` a batch also ends where the token length changes, so no
    batch is padded: padding changes the order in which float reductions over a row add
    up (and, in int8, can move a value across a quantisation step), so a padded text's
    vector would depend on its neighbours. Equal-length batches keep it independent.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    start = 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        if equal_lengths:
            length = lengths[order[start]]
            stop = start + 1
            while stop < end and lengths[order[stop]] == length:
                stop += 1
            end = stop
        yield order[start:end]
        start = end


def embedding_dimension(model: SentenceTransformer) -> int:
    """The model's embedding dimension; ``EmbedError`` when it declares none."""
    dim = model.get_embedding_dimension()
    if dim is None:
        raise EmbedError("the model does not declare its embedding dimension")
    return int(dim)


def _token_lengths(model: SentenceTransformer, texts: Sequence[str]) -> npt.NDArray[np.int64]:
    from transformers import PreTrainedTokenizerBase

    if not isinstance(getattr(model[0], "tokenizer", None), PreTrainedTokenizerBase):
        # Not a transformers tokenizer (e.g. static embeddings): characters stand in.
        return np.array([len(text) for text in texts], dtype=np.int64)
    return token_lengths(model.tokenizer, texts, model.max_seq_length)


def token_lengths(
    tokenizer: Any, texts: Sequence[str], max_length: int | None, *, lowercase: bool = False
) -> npt.NDArray[np.int64]:
    """Each text's token count after truncation to ``max_length`` (``lowercase`` first when
    the model's tokenizer expects it), tokenised in chunks: a million tokenised texts held
    as Python lists would take gigabytes."""
    lengths = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), _LENGTH_CHUNK):
        chunk = [
            text.lower() if lowercase else text for text in texts[start : start + _LENGTH_CHUNK]
        ]
        ids = tokenizer(
            chunk,
            truncation=max_length is not None,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths[start : start + len(chunk)] = [len(row) for row in ids]
    return lengths


def log_progress(
    batch: int, batches: int, done: int, total: int, started: float, how: str = ""
) -> None:
    """Log throughput every few batches and after the last one (of more than one)."""
    if batch % _LOG_EVERY_BATCHES == 0 or (batch == batches > 1):
        elapsed = time.perf_counter() - started
        log.info(
            "encoded %d/%d texts%s, %.1f texts/s",
            done,
            total,
            how,
            done / elapsed if elapsed else 0.0,
        )


def encode_precision(config: EmbedConfig, previous_manifest: dict[str, Any] | None) -> str:
    """The precision to encode with: in incremental mode, the previous index's."""
    if previous_manifest is None:
        return config.precision
    previous = index_precision(previous_manifest)
    if config.precision not in ("auto", previous):
        raise EmbedError(
            f"previous index {config.previous_index_dir} was encoded in {previous}, this "
            f"run asks for {config.precision}: its vectors cannot be reused; build a full "
            "index (no previous_index_dir)"
        )
    return previous
