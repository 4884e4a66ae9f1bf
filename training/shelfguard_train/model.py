"""Loading models offline, choosing the device, and hashing a saved model's bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shelfguard_train.config import ConfigError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

__all__ = [
    "CARD_FILENAME",
    "Runtime",
    "load_model",
    "model_sha256",
    "resolve_runtime",
]

CARD_FILENAME = "shelfguard_model_card.json"


@dataclass(frozen=True)
class Runtime:
    """Where the model runs: ``cpu`` or ``cuda``, and the autocast dtype (bf16 on CUDA)."""

    device: str
    autocast_dtype: torch.dtype | None = None

    @property
    def precision(self) -> str:
        """``bf16`` under autocast, else ``fp32`` (recorded in the model card)."""
        return "bf16" if self.autocast_dtype is not None else "fp32"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision on CUDA; a no-op on CPU, where fp32 keeps runs reproducible."""
        import torch

        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device, dtype=self.autocast_dtype):
            yield


def resolve_runtime(preference: str) -> Runtime:
    """``auto`` picks CUDA (with bf16 when the GPU supports it) when present, else CPU."""
    import torch

    cuda = torch.cuda.is_available()
    if preference == "cuda" and not cuda:
        raise ConfigError("device is 'cuda' but no CUDA device is available")
    if preference == "cpu" or not cuda:
        return Runtime(device="cpu")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return Runtime(device="cuda", autocast_dtype=dtype)


def load_model(
    path: Path, runtime: Runtime, max_seq_length: int | None = None
) -> SentenceTransformer:
    """Load a sentence-transformers model from a local folder, never from the network.

    ``max_seq_length`` overrides the model's own limit (it is saved with the model, so a
    fine-tuned model is later evaluated and served with the length it was trained with).
    """
    if not path.is_dir():
        raise ConfigError(f"model folder not found: {path} (models are never downloaded)")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a sentence-transformers or transformers model folder")
    # The hub client reads these when first imported: any stray download attempt fails
    # fast instead of hanging on a network the training pod may not have.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=runtime.device, local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def model_sha256(model_dir: Path, exclude: tuple[str, ...] = (CARD_FILENAME,)) -> str:
    """sha256 over every file of a saved model, binding a blessing to its exact bytes.

    Files are taken in sorted order of their POSIX paths relative to ``model_dir``;
    each contributes its path, a NUL byte, its size as 8 big-endian bytes and its
    content, so renaming, moving or editing any file changes the hash. Top-level names
    in ``exclude`` are skipped: by default the shelfguard model card, which records
    timings and paths that differ between two otherwise identical runs (it holds the
    lineage, not the model).
    """
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    files = sorted(
        (p for p in model_dir.rglob("*") if p.is_file()),
        key=lambda p: p.relative_to(model_dir).as_posix(),
    )
    digest = hashlib.sha256()
    for file in files:
        relative = file.relative_to(model_dir).as_posix()
        if relative in exclude:
            continue
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
