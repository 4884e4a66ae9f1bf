"""A canary served for real: ``shelfguard serve`` answers a share of sessions with the
canary alias's pair, records which pair answered each search, and the online gate
judges the two pairs on what simulated shoppers did.

Both pairs use the bundled base model (real retrieval quality); the bad one's index was
built from the same catalog with the texts shuffled across product ids, the way a model
trained on shuffled pairs ranks: wrong products for every query, yet a pair that passes
every hash check. The shoppers come from the tiny store's hidden truth (conftest's
TINY_*), so the true nDCG@10 of each pair is known.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import Pair, free_port, named_products, register_pair

from shelfguard.config import Settings, load_settings
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.model import canary
from shelfguard.policy import CanaryPolicy
from shelfguard.serving.served_log import PAIRS_FILE, ServedLog
from shelfguard_train.config import default_base_model

CLI = str(Path(sys.executable).with_name("shelfguard"))
#: The tiny store: generate(products=120, seed=11, searches=1500), conftest's TINY_*.
TINY_PRODUCTS, TINY_SEED, TINY_SEARCHES = 120, 11, 1500
POLICY = CanaryPolicy(min_impressions=1000, metric="debiased_ctr", max_drop=0.02)


@dataclass
class Service:
    url: str
    home: Path
    settings: Settings
    ledger: Ledger
    pairs: dict[str, Pair]
    proc: subprocess.Popen[bytes]
    log_path: Path

    def point(self, alias: str, name: str) -> None:
        pair = self.pairs[name]
        action = "promote" if alias == "champion" else "canary_start"
        self.ledger.move_alias(
            alias, pair.model_id, pair.index_id, moved_by="test", reason=name, action=action
        )

    def readyz(self) -> dict[str, Any]:
        with httpx.Client(timeout=10) as client:
            body: dict[str, Any] = client.get(f"{self.url}/readyz").json()
        return body

    def wait_for(self, what: str, check: Any, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                body = self.readyz()
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if check(body):
                return body
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {body}")

    def simulate(self, sessions: int, seed: int) -> dict[str, Any]:
        found = subprocess.run(
            [
                CLI,
                "simulate",
                "--sessions",
                str(sessions),
                "--url",
                self.url,
                "--products",
                str(TINY_PRODUCTS),
                "--seed",
                str(TINY_SEED),
                "--searches",
                str(TINY_SEARCHES),
                "--shopper-seed",
                str(seed),
                "--json",
            ],
            env={**os.environ, "SHELFGUARD_HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert found.returncode == 0, found.stderr
        summary: dict[str, Any] = json.loads(found.stdout)
        assert summary["errors"] == 0, summary["first_errors"]
        return summary

    def delivered(self) -> Path:
        """Everything served so far, written out as a delivery (beside the worker)."""
        folder = self.settings.landing_dir / "served"
        assert ServedLog(folder).rotate(everything=True) is not None
        return folder


def _index(name: str, service: Service) -> Any:
    sha = service.pairs[name].index_sha256
    return lambda body: (body.get("serving") or {}).get("index_sha256") == sha


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("canary")
    home = root / "home"
    settings = load_settings({"SHELFGUARD_HOME": str(home)})
    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    base = Path(default_base_model())
    pairs = {
        "good": register_pair(
            ledger, base, named_products(tiny_data, root / "good"), root / "index-good", 32
        ),
        "shuffled": register_pair(
            ledger,
            base,
            named_products(tiny_data, root / "bad", shuffled=True),
            root / "index-bad",
            32,
        ),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env.update(SHELFGUARD_HOME=str(home), OMP_NUM_THREADS="2")
    port = free_port()
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                CLI,
                "serve",
                "--port",
                str(port),
                "--poll-seconds",
                "0.1",
                "--rotate-seconds",
                "3600",
                "--canary-share",
                "0.5",
                "--no-access-log",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    served = Service(f"http://127.0.0.1:{port}", home, settings, ledger, pairs, proc, log_path)
    try:
        served.point("champion", "good")
        served.wait_for("the champion pair", _index("good", served))
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        ledger.dispose()


def _arms_by_session(folder: Path) -> dict[str, set[str]]:
    sessions: dict[str, set[str]] = {}
    for part in folder.glob("served-*"):
        arm_of = {
            line.split("\t")[0]: line.split("\t")[1]
            for line in (part / PAIRS_FILE).read_text().splitlines()[1:]
        }
        for line in (part / "search_log.csv").read_text().splitlines()[1:]:
            fields = line.split("\t")
            sessions.setdefault(fields[1], set()).add(arm_of[fields[0]])
    return sessions


def test_a_worse_canary_is_blocked_by_the_online_gate_and_a_better_one_passes(
    service: Service,
) -> None:
    # 1. The shuffled pair as the canary, on half of the sessions.
    service.point("canary", "shuffled")
    service.wait_for("the canary", lambda b: (b.get("canary") or {}).get("share") == 0.5)
    summary = service.simulate(300, seed=1)
    true_ndcg = {sha: t["true_ndcg@10"] for sha, t in summary["by_index"].items()}
    good, bad = (service.pairs[n].index_sha256 for n in ("good", "shuffled"))
    assert set(true_ndcg) == {good, bad}
    assert true_ndcg[good] > true_ndcg[bad] + 0.2, true_ndcg
    folder = service.delivered()

    # Every session saw one pair only; about half the sessions saw the canary.
    sessions = _arms_by_session(folder)
    assert all(len(arms) == 1 for arms in sessions.values())
    canaried = sum(arms == {"canary"} for arms in sessions.values())
    assert 0.35 * len(sessions) < canaried < 0.65 * len(sessions), (canaried, len(sessions))

    evidence = canary.evidence(service.ledger, folder, POLICY)
    assert evidence.challenger_pair[1] == bad and evidence.champion_pair[1] == good
    verdict = canary.judge(evidence, POLICY)
    assert verdict.decided and not verdict.passed, verdict.reason
    # The online metric ranks the two pairs as their true nDCG@10 on the hidden truth does.
    assert evidence.champion.value > evidence.challenger.value
    print(
        f"true nDCG@10 {true_ndcg[good]} vs {true_ndcg[bad]}; debiased CTR "
        f"{evidence.champion.value:.4f} vs {evidence.challenger.value:.4f}; {verdict.reason}"
    )
    status = subprocess.run(
        [CLI, "canary", "status", "--json"],
        env={**os.environ, "SHELFGUARD_HOME": str(service.home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["arms"]["challenger"]["index_sha256"] == bad
    assert shown["arms"]["challenger"]["impressions"] == evidence.challenger.impressions
    # No policy is in force in this home: the default asks 5,000 impressions of each pair.
    assert (shown["decided"], shown["passed"]) == (False, False)
    assert "not enough impressions yet" in shown["reason"]

    # 2. The other way round: the good pair as the canary of a bad champion passes.
    for part in folder.glob("served-*"):  # the first round's deliveries, not the spool
        shutil.rmtree(part)
    service.point("champion", "shuffled")
    service.point("canary", "good")
    service.wait_for(
        "the swapped pairs",
        lambda b: (
            _index("shuffled", service)(b) and (b.get("canary") or {}).get("index_sha256") == good
        ),
    )
    service.simulate(300, seed=2)
    better = canary.judge(canary.evidence(service.ledger, service.delivered(), POLICY), POLICY)
    assert better.decided and better.passed, better.reason
    print(f"swapped: {better.reason}")
    assert better.difference > 0

    # 3. Ending the canary: every session is the champion's again.
    canary.end(service.ledger, by="test", reason="done")
    service.wait_for("no canary", lambda b: b.get("canary") is None)
    with httpx.Client(timeout=30) as client:
        answers = [
            client.get(f"{service.url}/search", params={"q": "sofa", "session": f"x{n}"}).json()
            for n in range(20)
        ]
    assert {a["served_by"] for a in answers} == {"champion"}
