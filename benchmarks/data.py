"""Benchmark inputs: generated stores (WANDS layout) and their training-side exports.

Everything lands under the work folder and is reused by later runs with the same size
and seed (the generator is deterministic: same arguments, same bytes), so a rerun of
``make bench`` spends its time on the stages, not on regenerating a million products.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import ROOT

_STAMP = ".bench-done.json"
_CONFTEST = ROOT / "tests" / "training" / "conftest.py"


def production_precision() -> str:
    """The precision the production policy encodes in (``deploy/governance.production.yml``
    → ``index.precision``): what the embedding and serving stages measure."""
    import yaml

    policy = yaml.safe_load((ROOT / "deploy" / "governance.production.yml").read_text("utf-8"))
    return str(policy["index"]["precision"])


def store_dir(work: Path, products: int, seed: int) -> Path:
    """Where the generated store of ``products`` products and ``seed`` lives."""
    return work / "data" / f"products-{products}-seed-{seed}"


def _done(folder: Path, params: dict[str, Any]) -> bool:
    stamp = folder / _STAMP
    if not stamp.is_file():
        return False
    try:
        return bool(json.loads(stamp.read_text(encoding="utf-8")) == params)
    except (OSError, ValueError):
        return False


def _mark_done(folder: Path, params: dict[str, Any]) -> None:
    (folder / _STAMP).write_text(json.dumps(params, sort_keys=True), encoding="utf-8")


def generate_store(work: Path, products: int, seed: int) -> tuple[Path, float]:
    """Generate (or reuse) the WANDS files; returns their folder and the seconds it took."""
    from shelfguard.data.generator import generate

    folder = store_dir(work, products, seed) / "wands"
    params = {"products": products, "seed": seed}
    if _done(folder, params):
        return folder, 0.0
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    generate(folder, products=products, seed=seed)
    _mark_done(folder, params)
    return folder, time.perf_counter() - started


def _training_conftest() -> ModuleType:
    # The tests' stand-in for the dbt export (same rules as the marts): reused rather
    # than copied, so the benchmark embeds and trains on exactly what the tests do.
    spec = importlib.util.spec_from_file_location("_shelfguard_bench_conftest", _CONFTEST)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {_CONFTEST}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_store(work: Path, products: int, seed: int) -> tuple[Path, float]:
    """pairs/products/golden parquet of the store (generated first if needed)."""
    wands, seconds = generate_store(work, products, seed)
    folder = store_dir(work, products, seed) / "export"
    params = {"products": products, "seed": seed}
    if _done(folder, params):
        return folder, seconds
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    _training_conftest().build_training_inputs(wands, folder)
    _mark_done(folder, params)
    return folder, seconds + time.perf_counter() - started


def product_only_source(wands: Path, target: Path) -> Path:
    """A source folder holding only ``product.csv`` (a hard link when possible)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    source, linked = wands / "product.csv", target / "product.csv"
    try:
        os.link(source, linked)
    except OSError:
        shutil.copyfile(source, linked)
    return target


def warm_page_cache(path: Path) -> None:
    """Read a file once so that our code and its baseline both find it in the page cache."""
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass
