"""The ``serve`` stage: ``shelfguard serve`` under 8 concurrent clients, against the floor.

The floor is the same encode + ANN search called in a loop in this process
(``CatalogSearcher.search``): one caller at a time, nothing else running, and as many
callers at once as there are clients, which is what the service's latency under those
clients is compared with (see ``_floor``). The service is
the real command in its own process on loopback; the clients are threads of this process
with one kept-alive connection each. Then the same load runs while the champion alias
moves 10 times between two pairs (the catalog's index and its refresh after a 1% change),
and every answer is checked: a status other than 200 is a failure; an answer whose model
and index are not one promoted pair, or whose hits are not that pair's own, is mixed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import export_store, production_precision

Result = dict[str, Any]
K = 10


def _named_catalog(export: Path, target: Path, share: float, seed: int) -> Path:
    """The export's products with names (as the pipeline's export has them); with
    ``share`` > 0, that share of the products' texts edited (an index refresh)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(export / "products.parquet").to_pylist()
    rng = np.random.default_rng(seed)
    edited = set(rng.choice(len(rows), int(len(rows) * share), replace=False).tolist())
    for number, row in enumerate(rows):
        row["product_name"] = row["text_to_embed"].split(". ", 1)[0]
        if number in edited:
            row["text_to_embed"] = row["text_to_embed"] + " (new edition)"
            row["content_hash"] = f"{row['content_hash']}-edited"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), target)
    return target


def _indexes(work: Path, export: Path, size: int, seed: int, model_dir: Path) -> tuple[Path, Path]:
    """Pair A's index of the catalog and pair B's (its refresh after a 1% change), built
    once per size and seed and reused by later runs."""
    from shelfguard_train.config import EmbedConfig
    from shelfguard_train.embed import embed

    base = work / "serve-indexes" / f"products-{size}-seed-{seed}"
    first, second = base / "a", base / "b"
    if (first / "manifest.json").is_file() and (second / "manifest.json").is_file():
        return first, second
    catalog = _named_catalog(export, base / "catalog-a" / "products.parquet", 0.0, seed)
    changed = _named_catalog(export, base / "catalog-b" / "products.parquet", 0.01, seed)
    for products, output, previous in ((catalog, first, None), (changed, second, first)):
        embed(
            EmbedConfig(
                model_dir=model_dir,
                products_path=products,
                output_dir=output,
                previous_index_dir=previous,
                device="cpu",
                precision=production_precision(),
            )
        )
    return first, second


def _queries(export: Path, limit: int = 200) -> list[str]:
    import pyarrow.parquet as pq

    seen: dict[str, None] = {}
    for name in ("golden.parquet", "pairs.parquet"):
        for query in pq.read_table(export / name, columns=["query"]).column(0).to_pylist():
            seen.setdefault(str(query), None)
    return list(seen)[:limit]


def _server_peak_rss_mb(pid: int) -> float | None:
    """The service process's peak RSS (it serves in-process with one worker)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    values = np.asarray(latencies) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _load(
    url: str, queries: list[str], clients: int, per_client: int, check: Any
) -> tuple[list[float], float, list[str]]:
    """``clients`` threads, ``per_client`` searches each; latencies, wall time, problems."""
    import httpx

    latencies: list[float] = []
    problems: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(timeout=120) as session:
            for n in range(per_client):
                query = queries[(number * per_client + n) % len(queries)]
                started = time.perf_counter()
                try:
                    answer = session.get(f"{url}/search", params={"q": query, "k": K})
                    elapsed = time.perf_counter() - started
                    problem = (
                        f"failed: {answer.status_code} {answer.text[:200]}"
                        if answer.status_code != 200
                        else check(query, answer.json())
                    )
                except httpx.HTTPError as exc:
                    elapsed, problem = time.perf_counter() - started, f"failed: {exc!r}"
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        problems.append(problem)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, problems


def _floor(model_dir: Path, index_dir: Path, queries: list[str], n: int, callers: int) -> Result:
    """The same search in a loop in this process, the service's floor: one caller at a
    time, and ``callers`` at once (the clients' concurrency, each caller with a searcher
    of its own: a tokenizer is not to be shared between threads).

    At one caller, latency is one search's cost. Under ``callers`` concurrent callers on
    a few cores each request also waits for the others (latency = callers / throughput),
    so the service's p50 at that concurrency is compared with the concurrent floor's.
    """
    from shelfguard_train.search import CatalogSearcher

    searchers = [CatalogSearcher.open(model_dir, index_dir, device="cpu") for _ in range(callers)]
    for searcher in searchers:
        for query in queries[:20]:
            searcher.search(query, K)

    def loop(searcher: CatalogSearcher, first: int, count: int, into: list[float]) -> None:
        for number in range(first, first + count):
            started = time.perf_counter()
            searcher.search(queries[number % len(queries)], K)
            into.append(time.perf_counter() - started)

    alone: list[float] = []
    began = time.perf_counter()
    loop(searchers[0], 0, n, alone)
    alone_seconds = time.perf_counter() - began
    together: list[list[float]] = [[] for _ in searchers]
    per_caller = max(1, n // callers)
    threads = [
        threading.Thread(target=loop, args=(searcher, i * per_caller, per_caller, together[i]))
        for i, searcher in enumerate(searchers)
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    together_seconds = time.perf_counter() - began
    p50, p99 = _percentiles(alone)
    concurrent = [latency for caller in together for latency in caller]
    concurrent_p50, concurrent_p99 = _percentiles(concurrent)
    return {
        "floor_p50_ms": p50,
        "floor_p99_ms": p99,
        "floor_requests_per_second": n / alone_seconds,
        "floor_concurrent_p50_ms": concurrent_p50,
        "floor_concurrent_p99_ms": concurrent_p99,
        "floor_concurrent_requests_per_second": len(concurrent) / together_seconds,
    }


class _Answers:
    """Each pair's own answers to the queries, to tell a mixed answer from a right one."""

    def __init__(self, model_dir: Path, indexes: list[Path], queries: list[str]) -> None:
        from shelfguard_train.embed import index_sha256
        from shelfguard_train.model import model_sha256
        from shelfguard_train.search import CatalogSearcher

        self.model_sha256 = model_sha256(model_dir)
        self.ids: dict[str, dict[str, list[int]]] = {}
        for index_dir in indexes:
            searcher = CatalogSearcher.open(model_dir, index_dir, device="cpu")
            sha = index_sha256(index_dir)
            answers = {query: searcher.search(query, K) for query in queries}
            self.ids[sha] = {q: [h.product_id for h in a] for q, a in answers.items()}

    def problem(self, query: str, body: dict[str, Any]) -> str | None:
        """None for a right answer, else what is wrong with it."""
        index = body.get("index_sha256")
        if body.get("model_sha256") != self.model_sha256 or index not in self.ids:
            return "mixed: a pair that was never promoted"
        # Exact: the service batches queries of one token length only, so a query's
        # vector, and its hits, are the ones it gets alone.
        if [h["product_id"] for h in body["hits"]] == self.ids[index][query]:
            return None
        return f"mixed: hits are not index {index[:12]}'s own for {query!r}"


class _Service:
    """``shelfguard serve`` in its own process on a free loopback port."""

    def __init__(self, home: Path, environ: dict[str, str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = home / "serve.log"
        cli = str(Path(sys.executable).with_name("shelfguard"))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    cli,
                    "serve",
                    "--port",
                    str(port),
                    "--poll-seconds",
                    "0.2",
                    "--no-access-log",
                    "--rotate-seconds",
                    "3600",
                ],
                env={**environ, "SHELFGUARD_HOME": str(home)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def serving(self) -> str | None:
        """The index sha256 the service answers with now (None: not ready)."""
        import httpx

        try:
            body = httpx.get(f"{self.url}/readyz", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            return None
        return (body.get("serving") or {}).get("index_sha256")

    def wait_for(self, index_sha: str, timeout: float) -> float:
        """Seconds until the service answers with ``index_sha``."""
        started = time.perf_counter()
        while self.serving() != index_sha:
            if self.proc.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError(
                    f"not serving {index_sha[:12]}: {self.log_path.read_text()[-2000:]}"
                )
            time.sleep(0.05)
        return time.perf_counter() - started

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def serve_stage(
    work: Path, size: int, seed: int, clients: int = 8, requests: int = 2000, moves: int = 10
) -> Result:
    """Floor, steady service, and service while the alias moves ``moves`` times."""
    from benchmarks.stages import _base_model_dir, _quiet, stage_home
    from shelfguard.config import load_settings
    from shelfguard.ledger import open_ledger
    from shelfguard_train.embed import read_manifest

    _quiet()
    export, _ = export_store(work, size, seed)
    model_dir = _base_model_dir()
    index_a, index_b = _indexes(work, export, size, seed, model_dir)
    queries = _queries(export)
    floor = _floor(model_dir, index_a, queries, min(requests, 600), clients)
    answers = _Answers(model_dir, [index_a, index_b], queries)
    sha_a, sha_b = list(answers.ids)

    home = stage_home(work, f"serve-{size}")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHELFGUARD_")}
    settings = load_settings({**environ, "SHELFGUARD_HOME": str(home)})
    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    model = ledger.record_artifact("model", str(model_dir), answers.model_sha256)
    meta = {"model_sha256": answers.model_sha256}
    pairs = {
        sha: ledger.record_artifact("index", str(path), sha, meta=meta)
        for sha, path in ((sha_a, index_a), (sha_b, index_b))
    }
    ledger.move_alias("champion", model.id, pairs[sha_a].id, moved_by="bench", reason="start")
    service = _Service(home, environ)
    try:
        service.wait_for(sha_a, 600)
        _load(service.url, queries, clients, 10, answers.problem)  # warm-up
        steady, steady_seconds, steady_problems = _load(
            service.url, queries, clients, max(1, requests // clients), answers.problem
        )
        done = threading.Event()
        moving: dict[str, Any] = {"latencies": [], "problems": []}

        def shoppers() -> None:
            while not done.is_set():
                latencies, _, found = _load(service.url, queries, clients, 25, answers.problem)
                moving["latencies"] += latencies
                moving["problems"] += found

        load = threading.Thread(target=shoppers)
        load.start()
        swaps = []
        try:
            for move in range(moves):
                target = sha_b if move % 2 == 0 else sha_a
                ledger.move_alias(
                    "champion",
                    model.id,
                    pairs[target].id,
                    moved_by="bench",
                    reason=f"move {move + 1}",
                    action="promote" if move % 2 == 0 else "rollback",
                )
                swaps.append(service.wait_for(target, 300))
        finally:
            done.set()
            load.join()
        rss = _server_peak_rss_mb(service.proc.pid)
    finally:
        service.stop()
        ledger.dispose()
    p50, p99 = _percentiles(steady)
    moving_p50, moving_p99 = _percentiles(moving["latencies"])
    problems = steady_problems + moving["problems"]
    return {
        **floor,
        "products": int(read_manifest(index_a)["counts"]["products"]),
        "clients": clients,
        "p50_ms": p50,
        "p99_ms": p99,
        "requests_per_second": len(steady) / steady_seconds,
        "requests": len(steady),
        "moving_requests": len(moving["latencies"]),
        "moving_p50_ms": moving_p50,
        "moving_p99_ms": moving_p99,
        "moves": moves,
        "swap_seconds_median": statistics.median(swaps),
        "swap_seconds_max": max(swaps),
        "failed": sum(p.startswith("failed") for p in problems),
        "mixed": sum(p.startswith("mixed") for p in problems),
        "problems": problems[:5],
        "peak_rss_mb": rss,
        "log": str(service.log_path),
        "queries": len(queries),
        "pairs": json.dumps({"index_a": sha_a[:12], "index_b": sha_b[:12]}),
    }
