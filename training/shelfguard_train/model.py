"""Loading models offline, choosing the device, and hashing a saved model's bytes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shelfguard_train.config import PRECISIONS, ConfigError
from shelfguard_train.hashing import files_sha256

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

__all__ = [
    "CARD_FILENAME",
    "Runtime",
    "cpu_has_native_bf16",
    "inference_runtime",
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
        """Autocast to ``autocast_dtype`` on the device; a no-op when it is None (fp32)."""
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


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX).

    Elsewhere torch emulates bf16 on the CPU, which is slower than fp32, so ``auto``
    precision stays fp32 there.
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def inference_runtime(device: str, precision: str = "auto") -> Runtime:
    """The runtime for encoding (evaluation, indexing, search), at ``precision``.

    ``fp32`` never autocasts. ``bf16`` autocasts on any device (on a CPU without native
    bf16 it is slow, but gives the same vectors as a CPU with it, so an index built
    in bf16 can be refreshed anywhere). ``auto`` is bf16 on a CUDA GPU that supports it
    and on a CPU with native bf16 (:func:`cpu_has_native_bf16`), else fp32. Training
    does not use this: it stays fp32 on the CPU (:func:`resolve_runtime`).
    """
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    runtime = resolve_runtime(device)
    if precision in ("fp32", "int8"):
        # int8 encodes with the model's OpenVINO export (shelfguard_train.text_encoder);
        # the torch model beside it stays fp32.
        return Runtime(device=runtime.device)
    if precision == "bf16" or (runtime.device == "cpu" and cpu_has_native_bf16()):
        return Runtime(device=runtime.device, autocast_dtype=torch.bfloat16)
    return runtime


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
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    return files_sha256(model_dir, [relative for relative in files if relative not in exclude])
