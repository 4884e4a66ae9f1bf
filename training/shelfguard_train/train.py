"""Fine-tuning the search bi-encoder on (query, product text) pairs from the click logs.

``train(config)`` is the one entry point: the CLI, the Kubernetes pod, the local
subprocess backend and the tests all call it. It

1. reads ``pairs.parquet`` and ``products.parquet`` (see ``shelfguard_train.data``);
2. keeps, per query, the train-split pairs with the strongest engagement (weight), so
   purchases and often-clicked products count before single stray clicks;
3. optionally adds one hard negative per example, mined with BM25 from the same top
   category but another product class (same-class products are too often relevant);
4. fine-tunes with ``MultipleNegativesRankingLoss`` in batches where no query and no
   product appears twice (a duplicate would be a false in-batch negative);
5. reports the validation split's loss and in-batch accuracy after every epoch;
6. saves the model (safetensors, tokenizer, configs) and ``shelfguard_model_card.json``
   with its lineage to ``<output_dir>/model``, and returns a ``TrainResult``.

Steps 2 to 4's examples and batches are built in ``shelfguard_train.examples``
(``Example``, ``build_examples`` and ``build_batches`` are re-exported here).

The run is seeded: on CPU the same inputs, config and seed give byte-identical weights,
and a run resumed from a checkpoint ends with the same weights as an uninterrupted one.
The pure PyTorch loop (rather than ``SentenceTransformerTrainer``) keeps the training
image free of ``datasets``/``accelerate`` and makes that resume guarantee easy to hold.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import shelfguard_train
from shelfguard_train.config import ConfigError, TrainConfig
from shelfguard_train.data import (
    PAIRS_FILE,
    PRODUCTS_FILE,
    DataContractError,
    read_pairs,
    read_products,
)
from shelfguard_train.examples import (
    Example,
    build_batches,
    build_examples,
    validation_examples,
)
from shelfguard_train.hashing import file_sha256
from shelfguard_train.model import (
    CARD_FILENAME,
    Runtime,
    load_model,
    model_sha256,
    resolve_runtime,
)

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

__all__ = ["Example", "TrainResult", "build_batches", "build_examples", "train"]

log = logging.getLogger(__name__)

MODEL_SUBDIR = "model"
CHECKPOINT_SUBDIR = "checkpoints"
# Scale 20 (temperature 0.05) is sentence-transformers' default for cosine MNRL.
LOSS_SCALE = 20.0
_MAX_GRAD_NORM = 1.0
_WEIGHT_DECAY = 0.01
_LOG_EVERY_STEPS = 10


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` produced; ``to_dict()`` is the JSON the orchestrator reads back."""

    model_dir: Path
    model_sha256: str
    config_hash: str
    base_model: Path
    base_model_sha256: str
    data_snapshot_id: str
    code_version: str
    metrics: dict[str, float]
    resumed_from_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; the model card itself stays in the model folder."""
        return {
            "model_dir": str(self.model_dir),
            "model_sha256": self.model_sha256,
            "config_hash": self.config_hash,
            "base_model": str(self.base_model),
            "base_model_sha256": self.base_model_sha256,
            "data_snapshot_id": self.data_snapshot_id,
            "code_version": self.code_version,
            "metrics": self.metrics,
            "resumed_from_step": self.resumed_from_step,
        }


@dataclass
class _Progress:
    step: int = 0
    examples_seen: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)


class _Trainer:
    """The training loop's state: model, loss, optimiser, schedule and checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        runtime: Runtime,
        examples: list[Example],
        texts: dict[int, str],
        validation: list[Example],
    ) -> None:
        import torch
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )

        self.config = config
        self.runtime = runtime
        self.examples = examples
        self.texts = texts
        self.validation = validation
        self.checkpoints = config.output_dir / CHECKPOINT_SUBDIR
        self.schedule = [
            (epoch, batch)
            for epoch in range(config.epochs)
            for batch in build_batches(examples, config.batch_size, config.seed, epoch)
        ]
        if not self.schedule:
            raise DataContractError(
                f"{PAIRS_FILE}: the train split yields no batch of two distinct queries"
            )
        torch.manual_seed(config.seed)
        self.model: SentenceTransformer = load_model(
            config.base_model, runtime, config.max_seq_length
        )
        self.loss: MultipleNegativesRankingLoss = MultipleNegativesRankingLoss(
            self.model, scale=LOSS_SCALE
        )
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, parameter in self.model.named_parameters():
            # As in the transformers examples: no weight decay on biases and LayerNorms.
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": _WEIGHT_DECAY},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
        )
        total = len(self.schedule)
        warmup = math.ceil(total * config.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _linear_warmup_decay(step, warmup, total)
        )
        self.progress = _Progress()

    def features(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenised texts on the training device."""
        import torch

        batch = self.model.preprocess(texts)
        return {
            k: v.to(self.runtime.device) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }

    def columns(self, batch: Sequence[Example]) -> list[dict[str, torch.Tensor]]:
        """Anchor and positive columns, plus a negative column when every example has one."""
        columns = [
            self.features([e.query for e in batch]),
            self.features([self.texts[e.positive] for e in batch]),
        ]
        if all(e.negative is not None for e in batch):
            columns.append(
                self.features([self.texts[e.negative] for e in batch if e.negative is not None])
            )
        return columns

    def step(self, batch: Sequence[Example]) -> float:
        """One optimiser step on one batch; returns the batch loss."""
        import torch

        self.model.train()
        with self.runtime.autocast():
            loss = self.loss(self.columns(batch), torch.zeros(len(batch)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), _MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def validate(self) -> dict[str, float]:
        """Mean MNRL loss and in-batch top-1 accuracy on the validation split."""
        import torch

        if not self.validation:
            return {}
        batches = build_batches(self.validation, self.config.batch_size, 0, 0)
        losses, hits, seen = [], 0, 0
        self.model.eval()
        with torch.no_grad(), self.runtime.autocast():
            for indices in batches:
                batch = [self.validation[i] for i in indices]
                columns = self.columns(batch)
                queries = self.model(columns[0])["sentence_embedding"]
                docs = self.model(columns[1])["sentence_embedding"]
                scores = (
                    LOSS_SCALE
                    * torch.nn.functional.normalize(queries, dim=-1)
                    @ (torch.nn.functional.normalize(docs, dim=-1).T)
                )
                target = torch.arange(len(batch), device=scores.device)
                losses.append(float(torch.nn.functional.cross_entropy(scores.float(), target)))
                hits += int((scores.argmax(dim=1) == target).sum())
                seen += len(batch)
        return {
            "validation_loss": float(np.mean(losses)) if losses else 0.0,
            "validation_accuracy": hits / seen if seen else 0.0,
            "validation_pairs": seen,
        }

    def save_checkpoint(self) -> None:
        """Write the resumable state to one file atomically, then drop older ones."""
        import torch

        self.checkpoints.mkdir(parents=True, exist_ok=True)
        target = self.checkpoints / f"step-{self.progress.step:07d}.pt"
        partial = target.with_name(target.name + ".partial")
        state = {
            "config_hash": self.config.config_hash(),
            "step": self.progress.step,
            "examples_seen": self.progress.examples_seen,
            "seconds": self.progress.seconds,
            "losses": self.progress.losses,
            "validation": self.progress.validation,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.runtime.device == "cuda" else [],
        }
        torch.save(state, partial)
        partial.replace(target)
        for older in self.checkpoints.glob("step-*.pt"):
            if older != target:
                older.unlink(missing_ok=True)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint file, if any."""
        done = sorted(self.checkpoints.glob("step-*.pt"))
        return done[-1] if done else None

    def resume(self, checkpoint: Path) -> None:
        """Restore weights, optimiser, schedule, RNG and counters from ``checkpoint``."""
        import torch

        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state["config_hash"] != self.config.config_hash():
            raise ConfigError(
                f"{checkpoint} was written by a run with another config "
                f"(config_hash {state['config_hash'][:12]}, this run "
                f"{self.config.config_hash()[:12]}); use a fresh output_dir"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.progress = _Progress(
            step=state["step"],
            examples_seen=state["examples_seen"],
            seconds=state["seconds"],
            losses=list(state["losses"]),
            validation=dict(state["validation"]),
        )

    def run(self) -> Iterator[int]:
        """Train the remaining steps, yielding each completed step number."""
        total = len(self.schedule)
        window_started = time.perf_counter()
        window_examples = 0
        for index in range(self.progress.step, total):
            epoch, indices = self.schedule[index]
            started = time.perf_counter()
            loss = self.step([self.examples[i] for i in indices])
            self.progress.seconds += time.perf_counter() - started
            self.progress.step = index + 1
            self.progress.examples_seen += len(indices)
            self.progress.losses.append(loss)
            window_examples += len(indices)
            epoch_done = index + 1 == total or self.schedule[index + 1][0] != epoch
            if self.progress.step % _LOG_EVERY_STEPS == 0 or epoch_done:
                elapsed = time.perf_counter() - window_started
                recent = self.progress.losses[-_LOG_EVERY_STEPS:]
                log.info(
                    "epoch %d step %d/%d loss %.4f lr %.2e %.1f pairs/s",
                    epoch + 1,
                    self.progress.step,
                    total,
                    float(np.mean(recent)),
                    self.scheduler.get_last_lr()[0],
                    window_examples / elapsed if elapsed else 0.0,
                )
                window_started, window_examples = time.perf_counter(), 0
            if epoch_done:
                self.progress.validation = self.validate()
                if self.progress.validation:
                    log.info(
                        "epoch %d validation loss %.4f accuracy %.3f",
                        epoch + 1,
                        self.progress.validation["validation_loss"],
                        self.progress.validation["validation_accuracy"],
                    )
            if epoch_done or self.progress.step % self.config.checkpoint_steps == 0:
                self.save_checkpoint()
            yield self.progress.step


def _linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _versions() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "shelfguard_train": shelfguard_train.__version__,
    }


def train(config: TrainConfig, on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Fine-tune ``config.base_model`` on the click pairs; save and describe the model.

    ``on_step(step, total_steps)`` is called after every step, once its checkpoint (if
    any) is on disk; an exception raised from it stops the run, which a later call with
    ``resume_from_checkpoint`` continues. Raises ``DataContractError`` for bad inputs
    and ``ConfigError`` for a bad config or an unusable device; both are user errors
    the CLI reports in one line.
    """
    wall_started = time.perf_counter()
    runtime = resolve_runtime(config.device)
    pairs = read_pairs(config.data_dir)
    products = read_products(config.data_dir)
    examples = build_examples(pairs, products, config)
    texts = {p.product_id: p.text for p in products}
    validation = validation_examples(pairs, set(texts))
    train_pairs = sum(1 for p in pairs if p.split == "train")
    log.info(
        "training %s on %d examples from %d train pairs (%d validation pairs), device %s %s",
        config.base_model,
        len(examples),
        train_pairs,
        len(validation),
        runtime.device,
        runtime.precision,
    )
    config.output_dir.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(config, runtime, examples, texts, validation)
    resumed_from: int | None = None
    checkpoint = trainer.latest_checkpoint() if config.resume_from_checkpoint else None
    if checkpoint is not None:
        trainer.resume(checkpoint)
        resumed_from = trainer.progress.step
        log.info("resumed from %s at step %d", checkpoint, resumed_from)
    for step in trainer.run():
        if on_step is not None:
            on_step(step, len(trainer.schedule))

    progress = trainer.progress
    metrics: dict[str, float] = {
        "train_pairs": train_pairs,
        "train_examples": len(examples),
        "epochs": config.epochs,
        "steps": progress.step,
        "train_seconds": round(progress.seconds, 2),
        "pairs_per_second": round(progress.examples_seen / progress.seconds, 2)
        if progress.seconds
        else 0.0,
        "final_loss": float(np.mean(progress.losses[-_LOG_EVERY_STEPS:])),
        **progress.validation,
        # Wall time of this call up to saving (a resumed run: since it resumed).
        "seconds": round(time.perf_counter() - wall_started, 2),
    }
    base_sha = model_sha256(config.base_model)
    model_dir = config.output_dir / MODEL_SUBDIR
    sha = _save(trainer, config, runtime, model_dir, base_sha, metrics)
    shutil.rmtree(trainer.checkpoints, ignore_errors=True)
    log.info("saved %s (sha256 %s)", model_dir, sha)
    return TrainResult(
        model_dir=model_dir,
        model_sha256=sha,
        config_hash=config.config_hash(),
        base_model=config.base_model,
        base_model_sha256=base_sha,
        data_snapshot_id=config.data_snapshot_id,
        code_version=config.code_version,
        metrics=metrics,
        resumed_from_step=resumed_from,
    )


def _save(
    trainer: _Trainer,
    config: TrainConfig,
    runtime: Runtime,
    model_dir: Path,
    base_sha: str,
    metrics: dict[str, float],
) -> str:
    """Save the model and its card as ``model_dir`` atomically; return the model's sha256."""
    partial = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trainer.model.save(str(partial), create_model_card=False)
    sha = model_sha256(partial)
    card = {
        "schema_version": 1,
        "model_sha256": sha,
        "model_sha256_covers": f"every file in this folder except {CARD_FILENAME}",
        "data_snapshot_id": config.data_snapshot_id,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "code_version": config.code_version,
        "base_model": {"path": str(config.base_model), "sha256": base_sha},
        "inputs": {
            "pairs_sha256": file_sha256(config.data_dir / PAIRS_FILE),
            "products_sha256": file_sha256(config.data_dir / PRODUCTS_FILE),
        },
        "objective": {
            "loss": "MultipleNegativesRankingLoss",
            "similarity": "cosine",
            "scale": LOSS_SCALE,
            "hard_negatives": config.hard_negatives,
            "shuffled_pairs": config.shuffle_pairs,
        },
        "training": {
            **metrics,
            "device": runtime.device,
            "precision": runtime.precision,
        },
        "versions": _versions(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (partial / CARD_FILENAME).write_text(
        json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    shutil.rmtree(model_dir, ignore_errors=True)
    partial.rename(model_dir)
    return sha
