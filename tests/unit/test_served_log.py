"""The search service's served log: journal, click window, rotation into delivery folders."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shelfguard.data.generator import SEARCH_LOG_COLUMNS
from shelfguard.serving.served_log import PART_PREFIX, Refused, ServedLog

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def rows(part: Path) -> list[dict[str, str]]:
    header, *lines = (part / "search_log.csv").read_text(encoding="utf-8").splitlines()
    assert header.split("\t") == SEARCH_LOG_COLUMNS
    return [dict(zip(SEARCH_LOG_COLUMNS, line.split("\t"), strict=True)) for line in lines]


def serve(log: ServedLog, search_id: str, products: list[int], at: datetime = T0) -> None:
    log.impression(
        search_id, session_id="s1", user_id="u1", query="oak desk", product_ids=products, at=at
    )


def test_a_rotation_writes_one_row_per_impression_with_its_clicks(tmp_path: Path) -> None:
    log = ServedLog(tmp_path / "served", click_window=60)
    serve(log, "a", [11, 12, 13])
    serve(log, "b", [21, 22])
    assert log.click("a", product_id=12, position=2, added_to_cart=True) is True
    assert log.click("a", product_id=12, position=2, purchased=True) is True
    part = log.rotate(now=T0 + timedelta(minutes=5))
    assert part is not None and part.folder.name.startswith(PART_PREFIX)
    assert (part.searches, part.impressions, part.clicks) == (2, 5, 2)
    got = rows(part.folder)
    assert [(r["search_id"], r["position"], r["product_id"]) for r in got] == [
        ("a", "1", "11"),
        ("a", "2", "12"),
        ("a", "3", "13"),
        ("b", "1", "21"),
        ("b", "2", "22"),
    ]
    clicked = {
        (r["search_id"], r["position"]): (r["clicked"], r["added_to_cart"], r["purchased"])
        for r in got
    }
    assert clicked[("a", "2")] == ("1", "1", "1")
    assert clicked[("a", "1")] == ("0", "0", "0")
    assert {r["user_email"] for r in got} == {""}  # never an e-mail
    assert {r["searched_at"] for r in got} == {"2026-12-01T10:00:00Z"}
    summary = json.loads((part.folder / "served.json").read_text())
    assert summary["impressions"] == 5
    assert log.pending() == 0
    assert log.rotate(now=T0 + timedelta(minutes=6)) is None  # nothing left


def test_searches_inside_the_click_window_wait_for_their_clicks(tmp_path: Path) -> None:
    log = ServedLog(tmp_path / "served", click_window=600)
    serve(log, "old", [1, 2], at=T0)
    serve(log, "young", [3, 4], at=T0 + timedelta(minutes=9))
    log.click("young", product_id=4, position=2)
    part = log.rotate(now=T0 + timedelta(minutes=10))
    assert part is not None
    assert {r["search_id"] for r in rows(part.folder)} == {"old"}
    assert log.pending() == 2  # the young search and its click stay in the journal
    later = log.rotate(now=T0 + timedelta(minutes=30))
    assert later is not None
    assert [(r["search_id"], r["clicked"]) for r in rows(later.folder)] == [
        ("young", "0"),
        ("young", "1"),
    ]


def test_a_click_that_does_not_match_its_search_is_refused(tmp_path: Path) -> None:
    log = ServedLog(tmp_path / "served", click_window=600)
    serve(log, "a", [11, 12])
    with pytest.raises(Refused, match="showed product 12 at position 2, not 99") as wrong:
        log.click("a", product_id=99, position=2)
    assert wrong.value.status == 422
    with pytest.raises(Refused, match="position 3 is outside the 2 results"):
        log.click("a", product_id=11, position=3)
    closed = ServedLog(tmp_path / "served", click_window=0.0)
    serve(closed, "b", [5])
    with pytest.raises(Refused, match="click window is closed") as late:
        closed.click("b", product_id=5, position=1)
    assert late.value.status == 410


def test_clicks_another_worker_took_are_matched_or_counted_at_rotation(tmp_path: Path) -> None:
    served_by, clicked_on = ServedLog(tmp_path / "served"), ServedLog(tmp_path / "served")
    serve(served_by, "a", [11, 12])
    assert clicked_on.click("a", product_id=12, position=2) is False  # not checked here
    assert clicked_on.click("a", product_id=77, position=1) is False  # wrong: dropped later
    assert clicked_on.click("nobody-served-this", product_id=1, position=1) is False
    part = clicked_on.rotate(everything=True)
    assert part is not None
    assert (part.clicks, part.unmatched_clicks) == (1, 2)
    assert [r["clicked"] for r in rows(part.folder)] == ["0", "1"]


def test_a_crash_leaves_nothing_half_written_where_ingestion_looks(tmp_path: Path) -> None:
    folder = tmp_path / "served"
    log = ServedLog(folder)
    serve(log, "a", [1, 2])
    # A worker died in the middle of a line, and a rotation died before its rename.
    with open(log.journal, "ab") as journal:
        journal.write(b'{"t":"s","id":"torn","ses')
    (folder / ".part-deadbeef").mkdir()
    (folder / ".part-deadbeef" / "search_log.csv").write_text("search_id\tsess")
    part = ServedLog(folder).rotate(everything=True)
    assert part is not None and part.torn_lines == 1
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == [part.folder.name]
    assert not list(folder.glob(".part-*"))
    assert [r["search_id"] for r in rows(part.folder)] == ["a", "a"]


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    logs = [ServedLog(tmp_path / "served") for _ in range(4)]

    def write(worker: int) -> None:
        for n in range(200):
            serve(logs[worker], f"w{worker}-{n}", list(range(10)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    rotated = []
    while any(t.is_alive() for t in threads):
        part = logs[0].rotate(everything=True)
        if part:
            rotated.append(part)
    for thread in threads:
        thread.join()
    last = logs[0].rotate(everything=True)
    rotated += [last] if last else []
    assert sum(p.torn_lines for p in rotated) == 0
    ids = [r["search_id"] for p in rotated for r in rows(p.folder)]
    assert len(ids) == 4 * 200 * 10
    assert len(set(ids)) == 800


def test_fields_that_would_break_the_layout_are_refused(tmp_path: Path) -> None:
    log = ServedLog(tmp_path / "served")
    with pytest.raises(ValueError, match="tab or a line break"):
        log.impression("a", session_id="s", user_id="u", query="oak\tdesk", product_ids=[1])


def test_each_delivery_says_which_pair_answered_each_search(tmp_path: Path) -> None:
    from shelfguard.serving.served_log import PAIRS_FILE, served_by_pair

    log = ServedLog(tmp_path / "served", click_window=60)
    champion, canary = ("m1", "i1"), ("m2", "i2")
    log.impression(
        "a",
        session_id="s1",
        user_id="u1",
        query="desk",
        product_ids=[1, 2, 3],
        at=T0,
        pair=champion,
    )
    log.impression(
        "b",
        session_id="s2",
        user_id="u2",
        query="desk",
        product_ids=[3, 2],
        at=T0,
        pair=canary,
        arm="canary",
    )
    log.impression(
        "c",
        session_id="s2",
        user_id="u2",
        query="sofa",
        product_ids=[5, 6, 7],
        at=T0,
        pair=canary,
        arm="canary",
    )
    log.click("c", product_id=7, position=3)
    part = log.rotate(now=T0 + timedelta(minutes=5))
    assert part is not None
    lines = (part.folder / PAIRS_FILE).read_text(encoding="utf-8").splitlines()
    assert lines == [
        "search_id\tarm\tmodel_sha256\tindex_sha256",
        "a\tchampion\tm1\ti1",
        "b\tcanary\tm2\ti2",
        "c\tcanary\tm2\ti2",
    ]
    grouped = served_by_pair(tmp_path / "served")
    assert [(s.session_id, s.clicks) for s in grouped[champion]] == [("s1", (0, 0, 0))]
    assert sorted((s.session_id, s.clicks) for s in grouped[canary]) == [
        ("s2", (0, 0)),
        ("s2", (0, 0, 1)),
    ]


def test_a_removed_folder_is_made_again_and_nothing_after_it_is_lost(tmp_path: Path) -> None:
    import shutil

    log = ServedLog(tmp_path / "served", click_window=60)
    serve(log, "a", [1, 2])
    shutil.rmtree(tmp_path / "served")  # an operator cleaning up under the running service
    serve(log, "b", [3, 4])
    part = log.rotate(now=T0 + timedelta(minutes=5))
    assert part is not None
    assert [r["search_id"] for r in rows(part.folder)] == ["b", "b"]
