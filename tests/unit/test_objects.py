"""Models and indexes are stored by content; gc removes only what nothing needs."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pytest
import sqlalchemy as sa

from shelfguard.cli import main
from shelfguard.config import Settings, load_settings
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.model import objects


def _folder(root: Path, name: str) -> tuple[Path, str]:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(name.encode() * 100)
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text(json.dumps({"name": name}))
    return folder, hashlib.sha256(name.encode()).hexdigest()


def test_a_stored_object_outlives_its_run_folder(sg_home: Settings, tmp_path: Path) -> None:
    source, sha = _folder(tmp_path / "runs" / "r1", "model")
    uri = objects.store(sg_home, "model", str(source), sha)
    assert uri == objects.object_uri(sg_home, "model", sha)
    assert objects.store(sg_home, "model", str(source), sha) == uri  # stored once
    shutil.rmtree(tmp_path / "runs")
    assert (Path(uri) / "sub" / "config.json").read_text() == json.dumps({"name": "model"})
    assert not list(Path(uri).parent.glob("*.partial"))
    with pytest.raises(ValueError, match="not a sha256"):
        objects.object_uri(sg_home, "model", "../../etc")


def test_an_object_store_gets_a_marker_last(tmp_path: Path) -> None:
    root = f"memory://objects-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        {"SHELFGUARD_HOME": str(tmp_path / "h"), "SHELFGUARD_ARTIFACT_ROOT": root}
    )
    source, sha = _folder(tmp_path, "index")
    uri = objects.store(settings, "index", str(source), sha)
    fs, path = fsspec.core.url_to_fs(uri)
    assert fs.cat(path + ".complete") == sha.encode()
    assert json.loads(fs.cat(f"{path}/sub/config.json")) == {"name": "index"}


def test_the_ledger_row_follows_the_content_to_its_address(sg_home: Settings) -> None:
    ledger = open_ledger(sg_home.ledger_url)
    sha = "a" * 64
    first = ledger.record_artifact("model", "/old/runs/r1/model", sha)
    stored = objects.object_uri(sg_home, "model", sha)
    again = ledger.record_artifact("model", stored, sha)
    assert (again.id, again.uri) == (first.id, stored)
    assert ledger.record_artifact("model", "/old/runs/r2/model", sha).uri == stored
    ledger.dispose()


def _age(ledger: Ledger, sha: str, days: float) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE artifacts SET created_at = :t WHERE sha256 = :s"),
            {"t": datetime.now(UTC) - timedelta(days=days), "s": sha},
        )


def test_gc_keeps_what_an_alias_a_running_run_or_the_window_needs(
    sg_home: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = open_ledger(sg_home.ledger_url)
    ledger.start_run("r/old", "search_model_retraining", lineage={})
    stored: dict[str, str] = {}
    for name in ("m-champion", "i-champion", "m-old", "i-old", "m-pending", "m-new"):
        kind = "model" if name.startswith("m-") else "index"
        source, sha = _folder(tmp_path / "src", name)
        stored[name] = sha
        uri = objects.store(sg_home, kind, str(source), sha)
        ledger.record_artifact(kind, uri, sha, produced_by_run="r/old")
    model = ledger.find_artifact("model", stored["m-champion"])
    index = ledger.find_artifact("index", stored["i-champion"])
    assert model is not None and index is not None
    ledger.move_alias("champion", model.id, index.id, moved_by="alice", reason="promote")
    ledger.start_run("r/pending", "search_model_retraining", lineage={})
    ledger.update_lineage("r/pending", model_sha256=stored["m-pending"])
    for name in ("m-champion", "i-champion", "m-old", "i-old", "m-pending"):
        _age(ledger, stored[name], days=30)

    dry = objects.collect(sg_home, ledger, keep_days=7, dry_run=True)
    assert {r["sha256"] for r in dry.removed} == {stored["m-old"], stored["i-old"]}
    assert ledger.collections() == []
    assert Path(objects.object_uri(sg_home, "model", stored["m-old"])).is_dir()

    capsys.readouterr()
    assert main(["gc", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert {r["sha256"] for r in done["removed"]} == {stored["m-old"], stored["i-old"]}
    assert done["kept"] == 4
    for name in ("m-old", "i-old"):
        kind = "model" if name.startswith("m-") else "index"
        assert not Path(objects.object_uri(sg_home, kind, stored[name])).exists()
    (record,) = ledger.collections()
    assert len(record["removed"]) == 2 and record["keep_days"] == 7
    # The artifact rows (the evidence) stay; the champion still resolves.
    assert ledger.find_artifact("model", stored["m-old"]) is not None
    champion = ledger.get_alias()
    assert champion is not None and Path(champion.model.uri).is_dir()
    ledger.dispose()
