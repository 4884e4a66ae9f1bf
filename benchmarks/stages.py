"""One function per benchmark stage; each runs in its own child process.

A stage measures our code first, records the process's peak RSS right after it (so
``peak_rss_mb`` is our code's high-water mark, imports and inputs included), then
measures the baseline on the same data in the same process. It returns plain
measurements; ``benchmarks.run`` turns them into the table rows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.data import (
    export_store,
    generate_store,
    product_only_source,
    production_precision,
    warm_page_cache,
)
from benchmarks.serve_stage import serve_stage

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from shelfguard_train.text_encoder import TextEncoder

Result = dict[str, Any]
BENCH_DAG = "benchmark"
SHORT_MAX_SEQ_LENGTH = 40


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def children_peak_rss_mb() -> float:
    """The largest peak RSS of any waited-for descendant process, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def stage_home(work: Path, name: str) -> Path:
    """A fresh folder for one stage (its SHELFGUARD_HOME where it needs one)."""
    home = work / "stages" / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home


# --------------------------------------------------------------------------------------
# prepare: generate and export the inputs (not timed as a stage)
# --------------------------------------------------------------------------------------


def prepare(work: Path, size: int, seed: int, export: bool) -> Result:
    """Generate the store of ``size`` products (and its parquet export when asked)."""
    if export:
        folder, seconds = export_store(work, size, seed)
    else:
        folder, seconds = generate_store(work, size, seed)
    return {"folder": str(folder), "seconds": round(seconds, 2)}


# --------------------------------------------------------------------------------------
# ingest: shelfguard.data.ingest.ingest vs DuckDB reading the file into a table by itself
# --------------------------------------------------------------------------------------


def _floor_sql(path: Path) -> str:
    from shelfguard.data.ingest import SPECS

    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8").rstrip("\r\n").split("\t")
    columns = {name: SPECS[0].columns.get(name, "VARCHAR") for name in header}
    columns_sql = "{" + ", ".join(f"'{n}': '{t}'" for n, t in columns.items()) + "}"
    quoted = str(path).replace("'", "''")
    return (
        f"create table products as select * from read_csv('{quoted}', delim='\\t', quote='', "
        f"escape='', header=true, auto_detect=false, columns={columns_sql})"
    )


def _floor(path: Path, database: Path) -> tuple[float, int]:
    import duckdb

    database.unlink(missing_ok=True)
    con = duckdb.connect(str(database))
    try:
        _, seconds = _timed(lambda: con.execute(_floor_sql(path)))
        rows = int(con.execute("select count(*) from products").fetchall()[0][0])
    finally:
        con.close()
    return seconds, rows


def _floor_apart(path: Path, database: Path) -> tuple[float, int]:
    # In a forked child: DuckDB's buffers then never count toward our ingest's peak RSS.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_floor, path, database).result()


#: Ingest and its floor each run this many times, alternating; the row reports medians.
INGEST_REPEATS = 3


def ingest_stage(work: Path, size: int, seed: int, repeats: int = INGEST_REPEATS) -> Result:
    """Ingest one product.csv of ``size`` rows with our code and with plain DuckDB, each
    ``repeats`` times, alternating (floor, ours, floor, ours, ...), and report the medians.

    Each of our runs loads into a fresh warehouse and ledger, so every run does the same
    work; the last one stays in the stage's home for the raw gate. One run of either side
    moved by 20-30% between full benchmark runs; the median of alternating runs is
    what the row's ratio compares.
    """
    from shelfguard.data.ingest import ingest
    from shelfguard.ledger import open_ledger

    wands, _ = generate_store(work, size, seed)
    home = stage_home(work, f"ingest-{size}")
    source = product_only_source(wands, home / "source")
    product_file = source / "product.csv"
    warm_page_cache(product_file)
    ours: list[float] = []
    floors: list[float] = []
    floor_rows = 0
    manifest = None
    for _ in range(repeats):
        floor_seconds, floor_rows = _floor_apart(product_file, home / "floor.duckdb")
        (home / "floor.duckdb").unlink(missing_ok=True)
        floors.append(floor_seconds)
        for name in ("warehouse.duckdb", "warehouse.duckdb.wal", "ledger.sqlite"):
            (home / name).unlink(missing_ok=True)
        ledger = open_ledger(f"sqlite:///{home / 'ledger.sqlite'}")
        try:
            started = time.perf_counter()
            manifest = ingest(source, home / "warehouse.duckdb", ledger)
            seconds = time.perf_counter() - started
        finally:
            ledger.dispose()
        ours.append(seconds)
    assert manifest is not None, "repeats must be at least 1"
    rss = peak_rss_mb()
    (home / "ingest.json").write_text(manifest.to_json(), encoding="utf-8")
    file = manifest.files[0]
    return {
        "rows": file.rows_read,
        "rows_accepted": file.rows_accepted,
        "bytes": file.bytes,
        "seconds": statistics.median(ours),
        "floor_seconds": statistics.median(floors),
        "runs_seconds": [round(s, 3) for s in ours],
        "floor_runs_seconds": [round(s, 3) for s in floors],
        "floor_rows": floor_rows,
        "peak_rss_mb": rss,
        "floor_peak_rss_mb": children_peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------
# raw_gate: run_gate("raw_data") vs one hand-written query computing the same checks
# --------------------------------------------------------------------------------------

# Every raw_products check and the batch's quarantine count, in one scan of the batch:
# rows are grouped by product_id once, and each check is a sum over the groups.
GATE_SQL = """
select
    sum(n) as rows,
    sum(n) filter (where product_id is null) as product_id_present,
    sum(n) filter (where product_id is not null and n > 1) as product_id_unique,
    sum(no_name) as product_name_present,
    sum(no_class) as product_class_present,
    sum(no_category) as category_hierarchy_present,
    sum(bad_rating) as average_rating_in_range,
    sum(negative_ratings) as rating_count_not_negative,
    sum(negative_reviews) as review_count_not_negative,
    (select count(*) from quarantine.products where file_sha256 = $sha) as quarantined
from (
    select
        product_id,
        count(*) as n,
        count(*) - count(product_name) as no_name,
        count(*) - count(product_class) as no_class,
        count(*) - count(category_hierarchy) as no_category,
        count(*) filter (where average_rating < 0 or average_rating > 5) as bad_rating,
        count(*) filter (where rating_count < 0) as negative_ratings,
        count(*) filter (where review_count < 0) as negative_reviews
    from raw.products
    where _file_sha256 = $sha
    group by product_id
) as per_id
"""

# Which gate check each column of GATE_SQL stands for.
_GATE_CHECKS = {
    "product_id_present": "raw_products.product_id_present",
    "product_id_unique": "raw_products.product_id_unique",
    "product_name_present": "raw_products.product_name_present",
    "product_class_present": "raw_products.product_class_present",
    "category_hierarchy_present": "raw_products.category_hierarchy_present",
    "average_rating_in_range": "raw_products.average_rating_in_range",
    "rating_count_not_negative": "raw_products.rating_count_not_negative",
    "review_count_not_negative": "raw_products.review_count_not_negative",
    "quarantined": "raw_data.quarantine_share.products",
}


def _gate_sql(duckdb_path: Path, sha: str) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        cursor = con.execute(GATE_SQL, {"sha": sha})
        names = [d[0] for d in cursor.description or []]
        row = cursor.fetchall()[0]
    finally:
        con.close()
    return {name: int(value or 0) for name, value in zip(names, row, strict=True)}


def _disagreements(checks: Sequence[dict[str, Any]], counts: dict[str, int]) -> list[str]:
    by_name = {c["name"]: c for c in checks}
    wrong = []
    for column, name in _GATE_CHECKS.items():
        found = by_name.get(name, {}).get("unexpected_count")
        if found is None or int(found) != counts[column]:
            wrong.append(f"{name}: gate {found}, sql {counts[column]}")
    return wrong


_RAW_TABLE = re.compile(r"\braw\.([a-z_]+)\b")


@contextmanager
def _table_reads() -> Iterator[Counter[str]]:
    """Counts, per raw table, the statements sent through SQLAlchemy that read it."""
    import sqlalchemy as sa

    reads: Counter[str] = Counter()

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        reads.update(set(_RAW_TABLE.findall(statement)))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        yield reads
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)


def raw_gate_stage(work: Path, size: int) -> Result:
    """The raw-data gate on the batch the ingest stage loaded (cold run, then warm run)."""
    from shelfguard.config import load_settings
    from shelfguard.gates import run_gate
    from shelfguard.ledger import open_ledger

    settings = load_settings()
    manifest = json.loads((settings.home / "ingest.json").read_text(encoding="utf-8"))
    inputs = {f["file_name"]: f["sha256"] for f in manifest["files"]}
    ledger = open_ledger(settings.ledger_url)
    seconds: dict[str, float] = {}
    try:
        for attempt in ("cold", "warm"):
            run_id = f"{BENCH_DAG}__raw_gate_{attempt}"
            ledger.start_run(
                run_id, BENCH_DAG, lineage={"batch_id": manifest["batch_id"], "inputs": inputs}
            )
            with _table_reads() as reads:
                started = time.perf_counter()
                outcome = run_gate("raw_data", run_id, settings=settings, ledger=ledger)
                seconds[attempt] = time.perf_counter() - started
    finally:
        ledger.dispose()
    rss = peak_rss_mb()
    sha = inputs["product.csv"]
    sql_seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for attempt in ("cold", "warm"):
        counts, sql_seconds[attempt] = _timed(lambda: _gate_sql(settings.duckdb_path, sha))
    return {
        "rows": counts["rows"],
        "seconds": seconds["warm"],
        "cold_seconds": seconds["cold"],
        "sql_seconds": sql_seconds["warm"],
        "sql_cold_seconds": sql_seconds["cold"],
        "status": outcome.status,
        "checks": len(outcome.checks),
        # Statements of the warm gate that read each raw table (GX's and the gate's).
        "table_statements": dict(sorted(reads.items())),
        "disagreements": _disagreements(outcome.checks, counts),
        "peak_rss_mb": rss,
        "peak_rss_mb_with_baseline": peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------
# Embedding helpers
# --------------------------------------------------------------------------------------


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")


def _base_model_dir() -> Path:
    from shelfguard_train.config import default_base_model

    return Path(default_base_model())


def _golden(
    export: Path, catalog: set[int]
) -> tuple[list[int], list[str], dict[int, dict[int, int]]]:
    from shelfguard_train.data import read_golden

    texts: dict[int, str] = {}
    grades: dict[int, dict[int, int]] = defaultdict(dict)
    for judgement in read_golden(export):
        texts[judgement.query_id] = judgement.query
        grades.setdefault(judgement.query_id, {})
        if judgement.product_id in catalog:
            grades[judgement.query_id][judgement.product_id] = judgement.grade
    query_ids = sorted(texts)
    return query_ids, [texts[q] for q in query_ids], dict(grades)


def ndcg_at_10(
    product_ids: Sequence[int],
    documents: np.ndarray,
    query_ids: Sequence[int],
    queries: np.ndarray,
    grades: dict[int, dict[int, int]],
) -> float:
    """Golden-set nDCG@10 of a dense ranking (the evaluation gate's metric)."""
    from shelfguard_train.evaluate import RankingEvaluator, top_k

    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(documents, dtype=np.float32).T
    ranked = top_k(scores, min(10, len(product_ids)))
    rankings = {
        query_id: [product_ids[i] for i in row]
        for query_id, row in zip(query_ids, ranked.tolist(), strict=True)
    }
    return float(RankingEvaluator(grades, ks=(10,))(rankings)["ndcg@10"])


def _token_stats(model: SentenceTransformer, texts: Sequence[str]) -> dict[str, float]:
    sample = list(texts[:2000])
    ids = model.tokenizer(sample, truncation=False)["input_ids"]
    lengths = np.array([len(row) for row in ids])
    return {
        "mean": round(float(lengths.mean()), 1),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "max_seq_length": int(model.max_seq_length or 0),
    }


@dataclass
class _Encoder:
    """One way of turning texts into normalised vectors, and the time it has spent."""

    name: str
    encode: Callable[[list[str]], np.ndarray]
    seconds: float = 0.0
    parts: list[np.ndarray] = field(default_factory=list)

    def run(self, texts: list[str]) -> None:
        vectors, seconds = _timed(lambda: np.asarray(self.encode(texts), dtype=np.float32))
        self.seconds += seconds
        self.parts.append(vectors)

    @property
    def vectors(self) -> np.ndarray:
        return np.concatenate(self.parts)


def _encoders(model: SentenceTransformer, ours: TextEncoder, candidates: bool) -> list[_Encoder]:
    """encode(batch_size=64), embed()'s encoder ``ours``, and other candidates."""
    import torch

    from shelfguard_train.embed import encode_texts
    from shelfguard_train.model import Runtime, inference_runtime

    fp32 = Runtime(device="cpu")
    encoders = [
        _Encoder(
            "baseline",
            lambda texts: model.encode(
                texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
            ),
        ),
        _Encoder("ours", lambda texts: ours.encode(texts, 64)),
    ]
    if not candidates:
        return encoders
    auto = inference_runtime("cpu", "auto")
    if ours.precision == "int8":
        encoders.append(
            _Encoder(f"torch_{auto.precision}", lambda texts: encode_texts(model, texts, 64, auto))
        )
    if ours.precision != "fp32":
        encoders.append(_Encoder("fp32", lambda texts: encode_texts(model, texts, 64, fp32)))
    quantized = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
    )
    encoders.append(
        _Encoder("int8_dynamic", lambda texts: encode_texts(quantized, texts, 64, fp32))
    )
    # The length fine-tuned models are trained and saved with (TrainConfig.max_seq_length).
    short = copy.deepcopy(model)
    short.max_seq_length = SHORT_MAX_SEQ_LENGTH
    encoders.append(
        _Encoder(
            f"max_seq_length_{SHORT_MAX_SEQ_LENGTH}",
            lambda texts: encode_texts(short, texts, 64, fp32),
        )
    )
    return encoders


# --------------------------------------------------------------------------------------
# embed_full: encode_texts (embed()'s encoder) vs SentenceTransformer.encode(batch_size=64)
# --------------------------------------------------------------------------------------

# The catalog is encoded in this many slices; each slice goes through every encoder, in
# a rotating order, so a change in the machine's load hits all of them alike.
ROUNDS = 4


def _gemm_gflops(seconds: float = 3.0) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at the encoder's layer shapes."""
    import torch

    tokens = torch.randn(4096, 384)
    weights = torch.randn(384, 1536)
    tokens @ weights  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tokens @ weights
        runs += 1
    return 2 * 4096 * 384 * 1536 * runs / (time.perf_counter() - started) / 1e9


def _encoder_flops_per_token(model: SentenceTransformer, tokens: float) -> float:
    """Multiply-adds x 2 of one token through the transformer's dense layers and attention."""
    config = model[0].auto_model.config
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 4 * hidden * hidden + 2 * hidden * inner  # Q, K, V, output; the two FFN layers
    attention = 2 * hidden * tokens  # scores and the weighted sum, over the sequence
    return 2.0 * layers * (dense + attention)


def embed_full_stage(work: Path, size: int, seed: int, candidates: bool) -> Result:
    """Encode a generated catalog of ``size`` products with each encoder, interleaved."""
    _quiet()
    from shelfguard_train.embed import read_catalog
    from shelfguard_train.model import cpu_has_native_bf16, inference_runtime, load_model
    from shelfguard_train.text_encoder import open_encoder, resolve_precision

    export, _ = export_store(work, size, seed)
    model = load_model(_base_model_dir(), inference_runtime("cpu", "fp32"))
    catalog = read_catalog(export / "products.parquet")
    texts = [p.text for p in catalog]
    product_ids = [p.product_id for p in catalog]
    # What embed() runs under the production policy's index.precision, export included.
    precision, fallback = resolve_precision(production_precision(), "cpu")
    encoder_dir = work / "int8-encoders" / f"products-{size}-seed-{seed}"
    shutil.rmtree(encoder_dir, ignore_errors=True)
    ours, export_seconds = _timed(
        lambda: open_encoder(
            _base_model_dir(),
            precision,
            device="cpu",
            encoder_dir=encoder_dir,
            calibration_texts=texts,
            model=model,
            fallback=fallback,
        )
    )
    encoders = _encoders(model, ours, candidates)
    for encoder in encoders:  # warm-up: thread pools, weight packing, first-call costs
        encoder.encode(texts[:64])
    bounds = np.linspace(0, len(texts), ROUNDS + 1).astype(int).tolist()
    for round_number in range(ROUNDS):
        chunk = texts[bounds[round_number] : bounds[round_number + 1]]
        shift = round_number % len(encoders)
        for encoder in encoders[shift:] + encoders[:shift]:
            encoder.run(chunk)

    query_ids, query_texts, grades = _golden(export, set(product_ids))
    measured: dict[str, Result] = {}
    for encoder in encoders:
        vectors = encoder.vectors
        queries = np.asarray(encoder.encode(query_texts), dtype=np.float32)
        measured[encoder.name] = {
            "name": encoder.name,
            "seconds": encoder.seconds,
            "ndcg10": ndcg_at_10(product_ids, vectors, query_ids, queries, grades),
        }
    # encode() in fp32 is the reference every other encoder's numbers are compared with.
    reference = encoders[0].vectors
    for encoder in encoders[2:]:
        cosine = np.sum(encoder.vectors * reference, axis=1)
        measured[encoder.name].update(
            ndcg10_delta=measured[encoder.name]["ndcg10"] - measured["baseline"]["ndcg10"],
            min_cosine_vs_fp32=float(cosine.min()),
            mean_cosine_vs_fp32=float(cosine.mean()),
        )
    tokens = _token_stats(model, texts)
    truncated = min(tokens["mean"], tokens["max_seq_length"] or tokens["mean"])
    gflop = len(texts) * truncated * _encoder_flops_per_token(model, truncated) / 1e9
    cosine = np.sum(encoders[1].vectors * reference, axis=1)
    return {
        "products": len(texts),
        "rounds": ROUNDS,
        "precision": ours.precision,
        "backend": ours.backend,
        "fallback": fallback,
        "export_seconds": export_seconds,
        "native_bf16": cpu_has_native_bf16(),
        "seconds": measured["ours"]["seconds"],
        "baseline_seconds": measured["baseline"]["seconds"],
        "ndcg10": measured["ours"]["ndcg10"],
        "baseline_ndcg10": measured["baseline"]["ndcg10"],
        "max_abs_diff": float(np.abs(encoders[1].vectors - reference).max()),
        "min_cosine_vs_fp32": float(cosine.min()),
        # How close fp32 encoding is to the machine's ceiling: the encoder's useful
        # GFLOP/s (tokens x FLOPs per token, no padding) against a plain fp32 matmul.
        "gemm_gflops": round(_gemm_gflops(), 1),
        "baseline_gflops": round(gflop / measured["baseline"]["seconds"], 1),
        "ours_gflops": round(gflop / measured["ours"]["seconds"], 1),
        "tokens": tokens,
        "golden_queries": len(query_ids),
        "peak_rss_mb": peak_rss_mb(),
        "candidates": [measured[e.name] for e in encoders[2:]],
    }


# --------------------------------------------------------------------------------------
# embed_incremental: embed(previous_index_dir=...) after changing a share of the catalog
# --------------------------------------------------------------------------------------


def _change_catalog(source: Path, target: Path, share: float, seed: int) -> int:
    """Copy products.parquet with ``share`` of the products' texts edited; returns how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    rows = table.num_rows
    changed = max(1, round(rows * share))
    picked = set(np.random.default_rng(seed).choice(rows, size=changed, replace=False).tolist())
    texts = table.column("text_to_embed").to_pylist()
    hashes = table.column("content_hash").to_pylist()
    for row in picked:
        texts[row] = f"{texts[row]} Now also available in a second finish."
        hashes[row] = hashlib.sha256(texts[row].encode("utf-8")).hexdigest()
    names = table.column_names
    table = table.set_column(names.index("text_to_embed"), "text_to_embed", pa.array(texts))
    table = table.set_column(names.index("content_hash"), "content_hash", pa.array(hashes))
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)
    return int(changed)


def embed_incremental_stage(work: Path, size: int, seed: int, share: float) -> Result:
    """Full embed of ``size`` products, then an incremental one after changing ``share``."""
    _quiet()
    from shelfguard_train.config import EmbedConfig
    from shelfguard_train.embed import embed

    export, _ = export_store(work, size, seed)
    home = stage_home(work, f"embed-incremental-{size}")
    changed_path = home / "changed" / "products.parquet"
    changed = _change_catalog(export / "products.parquet", changed_path, share, seed)
    model_dir = _base_model_dir()

    def run(products: Path, output: Path, previous: Path | None) -> Any:
        return embed(
            EmbedConfig(
                model_dir=model_dir,
                products_path=products,
                output_dir=output,
                previous_index_dir=previous,
                golden_path=export / "golden.parquet",
                device="cpu",
                precision=production_precision(),
            )
        )

    full, full_seconds = _timed(lambda: run(export / "products.parquet", home / "full", None))
    incremental, seconds = _timed(lambda: run(changed_path, home / "incremental", home / "full"))
    return {
        "products": full.counts["products"],
        "changed": changed,
        "seconds": seconds,
        "full_seconds": full_seconds,
        "full_encode_seconds": float(full.encode_seconds),
        "encode_seconds": float(incremental.encode_seconds),
        "counts": incremental.counts,
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------
# train: shelfguard_train.train.train vs a plain SentenceTransformerTrainer
# --------------------------------------------------------------------------------------


def _training_subset(export: Path, target: Path, config: Any, pairs: int) -> int:
    """Write a pairs.parquet whose train split yields exactly ``pairs`` examples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shelfguard_train.data import read_pairs, read_products
    from shelfguard_train.train import build_examples

    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(export / "products.parquet", target / "products.parquet")
    all_pairs = read_pairs(export)
    kept = build_examples(all_pairs, read_products(export), config)
    rng = np.random.default_rng(config.seed)
    chosen = {
        (kept[i].query, kept[i].positive)
        for i in rng.permutation(len(kept))[: min(pairs, len(kept))].tolist()
    }
    validation = [p for p in all_pairs if p.split == "validation"][: config.batch_size]
    rows = [p for p in all_pairs if (p.query, p.product_id) in chosen] + validation
    pq.write_table(
        pa.table(
            {
                "query": [p.query for p in rows],
                "product_id": pa.array([p.product_id for p in rows], pa.int64()),
                "grade": pa.array([p.grade for p in rows], pa.int32()),
                "weight": pa.array([p.weight for p in rows], pa.float64()),
                "split": [p.split for p in rows],
            }
        ),
        target / "pairs.parquet",
    )
    return len(chosen)


def _trainer_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("datasets", "accelerate"))


def _sentence_transformers_trainer(
    model: SentenceTransformer, anchors: list[str], positives: list[str], config: Any, out: Path
) -> float:
    """A plain SentenceTransformerTrainer run (MNRL, default batch sampler); its seconds."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from shelfguard_train.train import LOSS_SCALE

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=0.01,
        max_grad_norm=1.0,
        seed=config.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}),
        loss=MultipleNegativesRankingLoss(model, scale=LOSS_SCALE),
    )
    _, seconds = _timed(trainer.train)
    return seconds


class _MinimalLoop:
    """What SentenceTransformerTrainer does per step, without datasets/accelerate.

    Random batches of ``batch_size`` (the Trainer's default sampler), the collator's
    tokenisation, MNRL, AdamW (no weight decay on biases and LayerNorms), a linear
    warm-up/decay schedule and gradient clipping at 1.0. ``step()`` runs one step and
    adds its time to ``seconds``, so the steps can be interleaved with ``train()``'s.
    """

    def __init__(
        self, model: SentenceTransformer, anchors: list[str], positives: list[str], config: Any
    ) -> None:
        import torch
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )

        from shelfguard_train.train import LOSS_SCALE

        self.model, self.anchors, self.positives = model, anchors, positives
        self.loss = MultipleNegativesRankingLoss(model, scale=LOSS_SCALE)
        named = list(model.named_parameters())
        plain = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        decayed = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decayed, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}],
            lr=config.learning_rate,
        )
        self.size = config.batch_size
        self.steps = (len(anchors) + self.size - 1) // self.size
        warmup = int(np.ceil(self.steps * config.warmup_ratio))
        total = self.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: (
                s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
            ),
        )
        self.order = np.random.default_rng(config.seed).permutation(len(anchors)).tolist()
        self.done_steps = 0
        self.seconds = 0.0

    @property
    def done(self) -> bool:
        return bool(self.done_steps >= self.steps)

    def step(self) -> None:
        import torch

        if self.done:
            return
        started = time.perf_counter()
        self.model.train()
        rows = self.order[self.done_steps * self.size : (self.done_steps + 1) * self.size]
        features = [
            self.model.preprocess([self.anchors[i] for i in rows]),
            self.model.preprocess([self.positives[i] for i in rows]),
        ]
        loss = self.loss(features, torch.zeros(len(rows)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.done_steps += 1
        self.seconds += time.perf_counter() - started


def train_stage(work: Path, products: int, seed: int, pairs: int, batch_size: int) -> Result:
    """Fine-tune on ``pairs`` training pairs with ``train`` and with a plain trainer.

    Without ``datasets``/``accelerate`` (SentenceTransformerTrainer's requirements) the
    baseline is ``_MinimalLoop``, whose steps run between ``train()``'s own (through its
    ``on_step`` hook), so both see the same machine load; with them, the real Trainer
    runs after ``train()``.
    """
    _quiet()
    import torch

    from shelfguard_train.config import TrainConfig
    from shelfguard_train.data import read_pairs, read_products
    from shelfguard_train.model import load_model, resolve_runtime
    from shelfguard_train.train import build_examples, train

    export, _ = export_store(work, products, seed)
    home = stage_home(work, f"train-{pairs}")
    config = TrainConfig(
        data_dir=home / "data",
        output_dir=home / "ours",
        data_snapshot_id="benchmark",
        batch_size=batch_size,
        device="cpu",
        resume_from_checkpoint=False,
        seed=seed,
    )
    chosen = _training_subset(export, home / "data", config, pairs)
    products_list = read_products(config.data_dir)
    examples = build_examples(read_pairs(config.data_dir), products_list, config)
    texts = {p.product_id: p.text for p in products_list}
    anchors = [e.query for e in examples]
    positives = [texts[e.positive] for e in examples]
    if _trainer_available():
        kind = "SentenceTransformerTrainer (run after train())"
        result, wall = _timed(lambda: train(config))
        rss = peak_rss_mb()
        torch.manual_seed(config.seed)
        model = load_model(config.base_model, resolve_runtime("cpu"), config.max_seq_length)
        seconds = _sentence_transformers_trainer(model, anchors, positives, config, home / "st")
    else:
        kind = "a minimal loop of its steps, interleaved with train()'s (no datasets/accelerate)"
        torch.manual_seed(config.seed)
        model = load_model(config.base_model, resolve_runtime("cpu"), config.max_seq_length)
        loop = _MinimalLoop(model, anchors, positives, config)
        result, wall = _timed(lambda: train(config, on_step=lambda step, total: loop.step()))
        wall -= loop.seconds  # the baseline steps run inside train()'s on_step hook
        while not loop.done:
            loop.step()
        seconds = loop.seconds
        rss = peak_rss_mb()  # both models and optimisers: they train side by side
    metrics = result.metrics
    return {
        "pairs": chosen,
        "examples": len(examples),
        "steps": int(metrics["steps"]),
        "pairs_per_second": float(metrics["pairs_per_second"]),
        "train_seconds": float(metrics["train_seconds"]),
        "wall_seconds": wall,
        "baseline_kind": kind,
        "baseline_seconds": seconds,
        "baseline_pairs_per_second": len(examples) / seconds if seconds else 0.0,
        "batch_size": batch_size,
        "max_seq_length": config.max_seq_length,
        "peak_rss_mb": rss,
        "peak_rss_mb_with_baseline": peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------
# end_to_end: `shelfguard demo` in a fresh home, task durations from Airflow's database
# --------------------------------------------------------------------------------------


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def airflow_durations(airflow_db: Path) -> Result:
    """Wall time of each DAG run and the durations of the tasks that ran, from task_instance."""
    if not airflow_db.is_file():
        return {"dag_runs": [], "tasks": 0, "task_seconds": 0.0, "dag_wall_seconds": 0.0}
    con = sqlite3.connect(f"file:{airflow_db}?mode=ro", uri=True)
    try:
        tasks = con.execute(
            "select dag_id, run_id, task_id, state, start_date, end_date from task_instance "
            "where try_number >= 1 and start_date is not null and end_date is not null"
        ).fetchall()
        runs = con.execute(
            "select dag_id, run_id, state, start_date, end_date from dag_run "
            "where start_date is not null and end_date is not null order by start_date"
        ).fetchall()
    finally:
        con.close()
    per_run: dict[tuple[str, str], float] = defaultdict(float)
    count: dict[tuple[str, str], int] = defaultdict(int)
    for dag_id, run_id, _task, _state, start, end in tasks:
        started, ended = _parse_time(start), _parse_time(end)
        if started and ended:
            per_run[(dag_id, run_id)] += (ended - started).total_seconds()
            count[(dag_id, run_id)] += 1
    dag_runs = []
    for dag_id, run_id, state, start, end in runs:
        started, ended = _parse_time(start), _parse_time(end)
        wall = (ended - started).total_seconds() if started and ended else 0.0
        dag_runs.append(
            {
                "dag_id": dag_id,
                "state": state,
                "wall_seconds": round(wall, 2),
                "task_seconds": round(per_run[(dag_id, run_id)], 2),
                "tasks": count[(dag_id, run_id)],
            }
        )
    return {
        "dag_runs": dag_runs,
        "tasks": sum(count.values()),
        "task_seconds": sum(per_run.values()),
        "dag_wall_seconds": sum(r["wall_seconds"] for r in dag_runs),
    }


def end_to_end_stage(work: Path, products: int) -> Result:
    """Run ``shelfguard demo`` in a fresh home; wall time against the tasks' own time."""
    home = stage_home(work, "end-to-end")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFGUARD_")}
    env.update({"SHELFGUARD_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] = "False"
    executable = Path(sys.executable).with_name("shelfguard")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "shelfguard.cli"]
    log = work / "logs" / "end_to_end-demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        done, wall = _timed(
            lambda: subprocess.run(
                [*command, "demo", "--products", str(products)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        )
    measured = airflow_durations(home / "airflow" / "airflow.db")
    return {
        **measured,
        "products": products,
        "exit_code": done.returncode,
        "seconds": wall,
        "log": str(log),
        "peak_rss_mb": children_peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------
# console_runs: the governance console's Runs page over a ledger of many runs
# --------------------------------------------------------------------------------------

_CONSOLE_DAGS = ("catalog_refresh", "search_model_retraining")


def _seed_runs(ledger: Any, runs: int) -> None:
    """``runs`` finished runs with their gate verdicts: OK, PROMOTED, BLOCKED (with a failed
    check), REJECTED and FAILED in turn, written through the Ledger API."""
    outcomes = ("OK", "BLOCKED", "PROMOTED", "FAILED", "REJECTED")
    for n in range(runs):
        dag_id = _CONSOLE_DAGS[n % 2]
        run_id = f"{dag_id}/manual__bench-{n:05d}"
        outcome = outcomes[n % len(outcomes)]
        ledger.start_run(run_id, dag_id, triggered_by="scheduler")
        failed = outcome == "BLOCKED"
        ledger.record_gate(
            run_id,
            "raw_data",
            "fail" if failed else "pass",
            subject=f"batch:bench-{n}",
            checks=[
                {"name": "raw_products.product_id_unique", "status": "fail" if failed else "pass"},
                {"name": "raw_products.row_count", "status": "pass"},
            ],
        )
        ledger.finish_run(
            run_id,
            outcome,
            blocked_gate="raw_data" if failed else None,
            message="raw_products.product_id_unique failed" if failed else None,
        )


def console_runs_stage(work: Path, runs: int, loads: int = 10) -> Result:
    """The Runs page of a real api-server with the plugin, over a ledger of ``runs`` runs.

    Each load is a real authenticated HTTP request (a bearer token of governance-owner);
    the baseline is the same server answering the console's stylesheet, authenticated the
    same way, without reading the ledger.
    """
    import socket
    import statistics
    import urllib.request

    from shelfguard.config import load_settings
    from shelfguard.console.server import (
        ensure_demo_passwords,
        start_api_server,
        stop_api_server,
        wait_until_ready,
    )
    from shelfguard.ledger import open_ledger

    home = stage_home(work, "console_runs")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHELFGUARD_")}
    settings = load_settings({**environ, "SHELFGUARD_HOME": str(home)})
    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    try:
        _, seed_seconds = _timed(lambda: _seed_runs(ledger, runs))
    finally:
        ledger.dispose()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    proc = start_api_server(settings, "127.0.0.1", port, log_path=home / "api-server.log")
    root = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, "127.0.0.1", port)
        password = ensure_demo_passwords(settings)["governance-owner"]
        login = urllib.request.Request(
            f"{root}/auth/token",
            data=json.dumps({"username": "governance-owner", "password": password}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(login, timeout=30) as response:
            token = json.loads(response.read())["access_token"]

        def load(path: str) -> tuple[bytes, float]:
            request = urllib.request.Request(
                f"{root}/shelfguard/{path}", headers={"authorization": f"Bearer {token}"}
            )

            def fetch() -> bytes:
                with urllib.request.urlopen(request, timeout=60) as response:
                    body: bytes = response.read()
                    return body

            return _timed(fetch)

        first, cold = load("runs")  # the server's first page: templates compiled
        page = [load("runs")[1] for _ in range(loads)]
        static = [load("static/console.css")[1] for _ in range(loads)]
    finally:
        stop_api_server(proc)
    return {
        "runs": runs,
        "seconds": statistics.median(page),
        "max_seconds": max(page),
        "cold_seconds": cold,
        "static_seconds": statistics.median(static),
        "rows_shown": first.count(b"<tr data-outcome="),
        "seed_seconds": seed_seconds,
        "loads": loads,
    }


STAGES: dict[str, Callable[..., Result]] = {
    "prepare": prepare,
    "ingest": ingest_stage,
    "raw_gate": raw_gate_stage,
    "embed_full": embed_full_stage,
    "embed_incremental": embed_incremental_stage,
    "train": train_stage,
    "end_to_end": end_to_end_stage,
    "console_runs": console_runs_stage,
    "serve": serve_stage,
}
