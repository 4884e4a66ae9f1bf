"""``shelfguard simulate``: shoppers of a generated store, sent to a running search service.

Each simulated shopper is drawn from the store's hidden ground truth (the one
:func:`shelfguard.data.generator.generate` draws with the same arguments): a session of one
to three searches, each a query picked by its popularity. The service's answer is
judged against the hidden grades (Exact 2, Partial 1, Irrelevant 0), and the shopper
clicks, adds to cart and buys by the same position-based click model the generator's
search log comes from (:func:`shelfguard.data.generator.click_outcomes`). So online metrics
measured on this traffic have a true answer to be checked against: the served
rankings' nDCG@10 on the hidden grades, reported beside them.

Bounded and local: the service must be on a loopback address, every request has a
timeout, and the run stops after ``sessions`` sessions.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from shelfguard.data.generator import StoreTruth, click_outcomes, examination
from shelfguard_train.evaluate import ndcg_at_k

__all__ = ["MAX_SESSIONS", "PairTraffic", "SimulationError", "check_loopback", "simulate"]

MAX_SESSIONS = 100_000
K = 10


class SimulationError(ValueError):
    """The simulation cannot run as asked: one line saying why."""


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash, if it is http(s) on this machine; else refuse."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulationError(f"--url must be http://HOST:PORT of a search service, not {url!r}")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, None)}
    except socket.gaierror as exc:
        raise SimulationError(f"--url: cannot resolve {parts.hostname!r} ({exc})") from exc
    if not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
        raise SimulationError(
            f"--url must point at this machine (loopback), not {parts.hostname!r}: simulated "
            "shoppers are for testing a local service"
        )
    return url.rstrip("/")


@dataclass
class PairTraffic:
    """What one pair (index sha256) served, and how good it truly was."""

    searches: int = 0
    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    expected_clicks: float = 0.0  # sum of examination over impressions
    true_ndcg_sum: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "searches": self.searches,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "add_to_cart": self.carts,
            "purchases": self.purchases,
            "ctr": round(self.clicks / self.impressions, 4) if self.impressions else None,
            # Clicks over the examination the click model expects: a position-debiased CTR.
            "debiased_ctr": round(self.clicks / self.expected_clicks, 4)
            if self.expected_clicks
            else None,
            "true_ndcg@10": round(self.true_ndcg_sum / self.searches, 4) if self.searches else None,
        }


@dataclass
class Simulation:
    """The run's totals, per pair, and what went wrong."""

    sessions: int = 0
    by_pair: dict[str, PairTraffic] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Each searched query's complete judgements, computed once.
    judged: dict[int, dict[int, int]] = field(default_factory=dict, repr=False)

    def send(self, what: str, expected: int, request: Callable[[], Any]) -> Any | None:
        """The response of ``request()``, or None with the failure recorded."""
        import httpx

        try:
            answer = request()
        except httpx.HTTPError as exc:
            self.errors.append(f"{what}: {exc!r}")
            return None
        if answer.status_code != expected:
            self.errors.append(f"{what}: {answer.status_code} {answer.text[:200]}")
            return None
        return answer

    def to_dict(self) -> dict[str, Any]:
        total = PairTraffic()
        for traffic in self.by_pair.values():
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(traffic, name))
        return {
            "sessions": self.sessions,
            **total.to_dict(),
            "by_index": {sha: t.to_dict() for sha, t in self.by_pair.items()},
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
        }


def simulate(
    url: str,
    truth: StoreTruth,
    sessions: int,
    *,
    seed: int = 0,
    timeout: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
) -> Simulation:
    """Send ``sessions`` simulated shopping sessions to the service at ``url``."""
    import httpx

    if not 1 <= sessions <= MAX_SESSIONS:
        raise SimulationError(f"--sessions must be between 1 and {MAX_SESSIONS:,}, got {sessions}")
    base = check_loopback(url)
    rng = np.random.default_rng(seed)
    result = Simulation()
    with httpx.Client(base_url=base, timeout=timeout) as client:
        for number in range(sessions):
            searches = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
            session, user = f"sim-s{seed}-{number}", f"sim-u{seed}-{number % 997}"
            for query in truth.sample_queries(rng, searches).tolist():
                _shop(client, truth, int(query), session, user, rng, result)
            result.sessions += 1
            if progress is not None:
                progress(number + 1, sessions)
    return result


def _shop(
    client: Any,
    truth: StoreTruth,
    query: int,
    session: str,
    user: str,
    rng: np.random.Generator,
    result: Simulation,
) -> None:
    answer = result.send(
        "search",
        200,
        lambda: client.get(
            "/search", params={"q": truth.text(query), "k": K, "session": session, "user": user}
        ),
    )
    if answer is None:
        return
    body = answer.json()
    hits = [int(h["product_id"]) for h in body["hits"]]
    traffic = result.by_pair.setdefault(str(body["index_sha256"]), PairTraffic())
    if query not in result.judged:
        result.judged[query] = truth.judgements(query)
    traffic.searches += 1
    traffic.impressions += len(hits)
    # The evaluation gate's own nDCG@10, on the complete hidden judgements.
    traffic.true_ndcg_sum += ndcg_at_k(hits, result.judged[query], K) or 0.0
    if not hits:
        return
    clicked, carted, purchased = click_outcomes(truth.grades(query, hits)[None, :], rng)
    traffic.expected_clicks += float(examination(len(hits)).sum())
    for position in np.flatnonzero(clicked[0]).tolist():
        click = {
            "search_id": body["search_id"],
            "product_id": hits[position],
            "position": position + 1,
            "added_to_cart": bool(carted[0, position]),
            "purchased": bool(purchased[0, position]),
        }
        sent = result.send("click", 202, functools.partial(client.post, "/click", json=click))
        if sent is not None:
            traffic.clicks += 1
            traffic.carts += int(carted[0, position])
            traffic.purchases += int(purchased[0, position])
