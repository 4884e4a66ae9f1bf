"""``shelfguard serve`` started for real on loopback (two worker processes), following the
champion alias of its ledger: answers, bad input, hot swaps under load, a tampered index,
and the served log landing as a batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import Pair, free_port, named_products, register_pair

from shelfguard.cli import search_champion
from shelfguard.config import Settings, load_settings
from shelfguard.data.ingest import ingest
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.serving.served_log import ServedLog
from shelfguard_train.search import CatalogSearcher

CLI = str(Path(sys.executable).with_name("shelfguard"))
QUERIES = ("oak desk", "blue velvet sofa", "outdoor dining chair", "wall mirror", "king bed")
K = 5


@dataclass
class Served:
    url: str
    home: Path
    settings: Settings
    ledger: Ledger
    pairs: dict[str, Pair]
    expected: dict[tuple[str, str], dict[str, list[float]]]  # pair -> query -> scores
    proc: subprocess.Popen[bytes]
    log_path: Path

    def move(self, name: str, action: str = "promote") -> None:
        pair = self.pairs[name]
        self.ledger.move_alias(
            "champion",
            pair.model_id,
            pair.index_id,
            moved_by="test",
            reason=f"{action} {name}",
            action=action,
        )

    def readyz(self, client: httpx.Client) -> tuple[int, dict[str, Any]]:
        answer = client.get(f"{self.url}/readyz")
        return answer.status_code, answer.json()

    def wait_for(self, check: Any, what: str, timeout: float = 90.0) -> dict[int, dict[str, Any]]:
        """Poll /readyz until every worker (both pids) satisfies ``check``."""
        seen: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        # A new connection each time: a kept-alive one stays with one worker.
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=10, limits=fresh) as client:
            while time.monotonic() < deadline:
                try:
                    _, body = self.readyz(client)
                except httpx.ConnectError:  # still starting
                    assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
                    time.sleep(0.2)
                    continue
                seen[body["pid"]] = body
                if len(seen) == 2 and all(check(b) for b in seen.values()):
                    return seen
                assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
                time.sleep(0.05)
        raise AssertionError(
            f"timed out waiting for {what}: {seen}\n{self.log_path.read_text()[-3000:]}"
        )


def _serving(pair: Pair) -> Any:
    return lambda body: (
        (body.get("serving") or {}).get("model_sha256") == pair.model_sha256
        and (body["serving"]["index_sha256"] == pair.index_sha256)
    )


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_data: Path,
    tiny_model: Path,
    other_tiny_model: Path,
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serve")
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env.update(SHELFGUARD_HOME=str(home), OMP_NUM_THREADS="1")
    settings = load_settings({"SHELFGUARD_HOME": str(home)})
    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    products = named_products(tiny_data, root / "catalog")
    fewer = named_products(tiny_data, root / "catalog-fewer", keep=60)
    pairs = {
        "a": register_pair(ledger, tiny_model, products, root / "index-a"),
        "b": register_pair(ledger, other_tiny_model, products, root / "index-b"),
        "tampered": register_pair(ledger, tiny_model, fewer, root / "index-c"),
    }
    expected: dict[tuple[str, str], dict[str, list[float]]] = {}
    for name in ("a", "b"):
        pair = pairs[name]
        searcher = CatalogSearcher.open(pair.model_dir, pair.index_dir, device="cpu")
        expected[pair.shas] = {q: [h.score for h in searcher.search(q, K)] for q in QUERIES}
    log_path = root / "serve.log"
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                CLI,
                "serve",
                "--port",
                str(port),
                "--workers",
                "2",
                "--poll-seconds",
                "0.1",
                "--rotate-seconds",
                "3600",
                "--no-access-log",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = Served(
        f"http://127.0.0.1:{port}", home, settings, ledger, pairs, expected, proc, log_path
    )
    try:
        service.move("a")
        service.wait_for(_serving(pairs["a"]), "both workers serving pair a", timeout=180)
        yield service
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        ledger.dispose()


def _close(scores: list[float], expected: list[float]) -> bool:
    return len(scores) == len(expected) and all(
        abs(a - b) < 1e-3 for a, b in zip(scores, expected, strict=True)
    )


def test_answers_match_shelfguard_search(served: Served) -> None:
    pair = served.pairs["a"]
    found = subprocess.run(
        [CLI, "search", QUERIES[0], "-k", str(K), "--json"],
        env={**os.environ, "SHELFGUARD_HOME": str(served.home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 0, found.stderr
    from_cli = {QUERIES[0]: json.loads(found.stdout)["hits"]}
    with httpx.Client(timeout=30) as client:
        for query in QUERIES:
            answer = client.get(f"{served.url}/search", params={"q": query, "k": K})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["model_sha256"], body["index_sha256"]) == pair.shas
            # The command's own code path (in this process for the other queries).
            _, hits = search_champion(served.settings, query, K)
            expected = from_cli.get(query) or [
                {"product_id": h.product_id, "score": h.score} for h in hits
            ]
            assert [h["product_id"] for h in body["hits"]] == [h["product_id"] for h in expected]
            assert _close([h["score"] for h in body["hits"]], [h["score"] for h in expected])
            assert all(h["product_name"] and h["product_class"] for h in body["hits"])
        docs = client.get(f"{served.url}/openapi.json").json()
        assert {"/search", "/click", "/healthz", "/readyz"} <= set(docs["paths"])
        assert client.get(f"{served.url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"q": ""}, "q: the query is empty"),
        ({"q": " \t "}, "q: the query is empty"),
        ({}, "q: Field required"),
        ({"q": "desk", "k": "0"}, "k: Input should be greater than or equal to 1"),
        ({"q": "desk", "k": "101"}, "k: Input should be less than or equal to 100"),
        ({"q": "desk", "k": "ten"}, "k: Input should be a valid integer"),
        ({"q": "desk " * 60}, "q: the query is over 256 characters"),
        ({"q": "x" * 5000}, "q: String should have at most 1024 characters"),
        ({"q": "desk\x00"}, "q: the query holds control characters"),
        ({"q": "desk", "user": "ann@example.com"}, "user: looks like an e-mail address"),
        ({"q": "desk", "session": "a b"}, "session: use 1 to 128 letters"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_one_line_reason(
    served: Served, params: dict[str, str], reason: str
) -> None:
    answer = httpx.get(f"{served.url}/search", params=params, timeout=30)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert detail.startswith(reason), detail


def test_bad_clicks_get_a_4xx_with_a_one_line_reason(served: Served) -> None:
    with httpx.Client(timeout=30) as client:
        body = client.get(f"{served.url}/search", params={"q": "oak desk", "k": 3}).json()
        first = body["hits"][0]["product_id"]
        bad = [
            (
                {"search_id": body["search_id"], "product_id": first, "position": 0},
                "position: Input should be greater than or equal to 1",
            ),
            ({"search_id": body["search_id"], "position": 1}, "product_id: Field required"),
            ({"search_id": "", "product_id": first, "position": 1}, "search_id: String should"),
        ]
        for click, reason in bad:
            answer = client.post(f"{served.url}/click", json=click)
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"].startswith(reason), answer.text
        broken = client.post(
            f"{served.url}/click",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 422 and "\n" not in broken.json()["detail"]


def test_the_alias_moves_under_load_with_no_error_and_no_mixed_answer(served: Served) -> None:
    """8 clients search while the alias moves 4 times; both workers follow it."""
    stop = threading.Event()
    answers: list[tuple[str, str, str, list[float]]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def shopper(number: int) -> None:
        with httpx.Client(timeout=60) as client:
            for n in range(2000):  # bounded: stops by itself
                if stop.is_set():
                    return
                query = QUERIES[(number + n) % len(QUERIES)]
                try:
                    answer = client.get(f"{served.url}/search", params={"q": query, "k": K})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    if answer.status_code != 200:
                        errors.append(f"{answer.status_code} {answer.text}")
                        continue
                    body = answer.json()
                    answers.append(
                        (
                            body["model_sha256"],
                            body["index_sha256"],
                            query,
                            [h["score"] for h in body["hits"]],
                        )
                    )

    shoppers = [threading.Thread(target=shopper, args=(n,)) for n in range(8)]
    for thread in shoppers:
        thread.start()
    try:
        for name, action in (
            ("b", "promote"),
            ("a", "rollback"),
            ("b", "promote"),
            ("a", "rollback"),
        ):
            time.sleep(0.5)
            served.move(name, action)
            served.wait_for(_serving(served.pairs[name]), f"both workers serving {name}")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in shoppers:
            thread.join(timeout=120)
    assert errors == []
    pairs = {served.pairs["a"].shas, served.pairs["b"].shas}
    by_pair = {pair: 0 for pair in pairs}
    for model, index, query, scores in answers:
        assert (model, index) in pairs, "an answer named a pair that was never promoted"
        # The scores are those of the pair it names: its model AND its index answered.
        assert _close(scores, served.expected[(model, index)][query]), (model[:12], query)
        by_pair[(model, index)] += 1
    assert all(count > 0 for count in by_pair.values()), by_pair
    print(f"{len(answers)} answers during 4 swaps: {list(by_pair.values())}")


def test_a_tampered_index_is_refused_and_the_old_pair_keeps_serving(served: Served) -> None:
    tampered = served.pairs["tampered"]
    target = next(p for p in tampered.index_dir.iterdir() if p.suffix == ".parquet")
    target.write_bytes(target.read_bytes() + b"\0")  # after the ledger recorded its sha256
    serving = served.pairs["a"]
    served.move("tampered")
    seen = served.wait_for(
        lambda body: (body.get("refused") or {}).get("index_sha256") == tampered.index_sha256,
        "both workers refusing the tampered pair",
    )
    for body in seen.values():
        assert "sha256" in body["refused"]["reason"], body["refused"]
        assert body["ready"] and body["serving"]["index_sha256"] == serving.index_sha256
    answer = httpx.get(f"{served.url}/search", params={"q": "oak desk", "k": K}, timeout=30)
    assert answer.status_code == 200
    assert (answer.json()["model_sha256"], answer.json()["index_sha256"]) == serving.shas
    assert "refused champion version" in served.log_path.read_text()
    served.move("a", "rollback")  # back to a good pair for the tests that follow
    served.wait_for(lambda body: body["refused"] is None and _serving(serving)(body), "pair a")


def test_simulated_shoppers_search_click_and_are_judged_on_the_hidden_truth(
    served: Served,
) -> None:
    """The tiny store is generate(products=120, seed=11, searches=1500): conftest's TINY_*."""
    found = subprocess.run(
        [
            CLI,
            "simulate",
            "--sessions",
            "25",
            "--url",
            served.url,
            "--products",
            "120",
            "--seed",
            "11",
            "--searches",
            "1500",
            "--json",
        ],
        env={**os.environ, "SHELFGUARD_HOME": str(served.home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert found.returncode == 0, found.stderr
    summary = json.loads(found.stdout)
    assert summary["sessions"] == 25 and summary["errors"] == 0
    assert summary["searches"] >= 25 and summary["impressions"] == 10 * summary["searches"]
    assert summary["clicks"] > 0
    (serving,) = summary["by_index"]  # one pair answered them all
    assert serving == served.pairs["a"].index_sha256
    assert 0.0 <= summary["true_ndcg@10"] <= 1.0
    refused = subprocess.run(
        [CLI, "simulate", "--sessions", "1", "--url", "http://10.0.0.1:8080"],
        env={**os.environ, "SHELFGUARD_HOME": str(served.home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "loopback" in refused.stderr, refused.stderr


def test_served_searches_and_clicks_land_as_a_batch(served: Served) -> None:
    with httpx.Client(timeout=30) as client:
        shown = []
        for n, query in enumerate(QUERIES):
            body = client.get(
                f"{served.url}/search",
                params={"q": query, "k": 3, "session": f"sess-{n}", "user": f"shopper-{n % 2}"},
            ).json()
            shown.append(body)
            hit = body["hits"][1]
            click = client.post(
                f"{served.url}/click",
                json={
                    "search_id": body["search_id"],
                    "product_id": hit["product_id"],
                    "position": 2,
                    "added_to_cart": n % 2 == 0,
                },
            )
            assert click.status_code == 202, click.text
    folder = served.settings.landing_dir / "served"
    part = ServedLog(folder).rotate(everything=True)  # beside the running workers, locked
    assert part is not None
    lines = (part.folder / "search_log.csv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    mine = {body["search_id"] for body in shown}
    ours = [row for row in rows if row[0] in mine]
    assert len(ours) == 3 * len(QUERIES)
    assert {row[2] for row in ours} == {"shopper-0", "shopper-1"} and {row[3] for row in ours} == {
        ""
    }
    clicked = {(row[0], row[7]) for row in ours if row[8] == "1"}
    assert clicked == {(sid, "2") for sid in mine}
    assert not list(folder.glob(".part-*"))

    ledger = open_ledger(served.settings.ledger_url)
    try:
        warehouse = served.home / "served-warehouse.duckdb"
        manifest = ingest(part.folder, warehouse, ledger, pseudonym_key=b"k" * 32)
    finally:
        ledger.dispose()
    (loaded,) = manifest.files
    assert (loaded.table, loaded.rows_read, loaded.rows_quarantined) == (
        "raw.search_log",
        len(rows),
        0,
    )
    shutil.rmtree(part.folder)
