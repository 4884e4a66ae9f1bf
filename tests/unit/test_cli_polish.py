"""The CLI says its version, explains itself, names a defaulted home, and tells history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shelfguard import __version__
from shelfguard.cli import main
from shelfguard.config import Settings
from shelfguard.ledger import open_ledger

CLI = str(Path(sys.executable).with_name("shelfguard"))


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"shelfguard {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    said = capsys.readouterr().out
    assert "``" not in said  # no reStructuredText markup
    for part in ("examples:", "exit codes:", "3 BLOCKED", "SHELFGUARD_HOME", "history"):
        assert part in said


def test_a_defaulted_home_is_named_on_stderr(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFGUARD_")}
    result = subprocess.run(
        [CLI, "status", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # One line, never wrapped, however long the path.
    assert f"home: {tmp_path / '.shelfguard'} (SHELFGUARD_HOME is not set)\n" in result.stderr
    assert json.loads(result.stdout)["champion"] is None


def test_history_lists_every_champion_version(
    sg_home: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = open_ledger(sg_home.ledger_url)
    ledger.start_run("r/1", "search_model_retraining", lineage={})
    pairs = []
    for tag in ("a", "b"):
        model = ledger.record_artifact("model", f"/m/{tag}", tag * 64)
        index = ledger.record_artifact("index", f"/i/{tag}", tag.upper() * 64)
        pairs.append((model.id, index.id))
    for version, (model_id, index_id) in enumerate(pairs):
        ledger.move_alias(
            "champion", model_id, index_id, moved_by="alice", reason=f"v{version + 1}", run_id="r/1"
        )
    ledger.finish_run("r/1", "PROMOTED")
    ledger.dispose()
    capsys.readouterr()
    assert main(["history", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [m["version"] for m in found["champion"]] == [1, 2]
    assert found["champion"][1]["model_sha256"] == "b" * 64
    assert [r["outcome"] for r in found["runs"]] == ["PROMOTED"]
    assert main(["history"]) == 0
    text = capsys.readouterr().out
    assert "v2" in text and "last 1 run(s): 1 PROMOTED" in text


def test_the_shell_completes_commands_and_options(tmp_path: Path) -> None:
    code = subprocess.run([CLI, "completion", "bash"], capture_output=True, text=True, timeout=120)
    assert code.returncode == 0 and "complete" in code.stdout and "shelfguard" in code.stdout
    assert "home:" not in code.stderr  # no home is opened to print shell code

    def complete(line: str) -> set[str]:
        out = tmp_path / "completions"
        env = {
            **os.environ,
            "_ARGCOMPLETE": "1",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        }
        result = subprocess.run([CLI], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return {word.strip() for word in out.read_text().split("\x0b")}

    assert "status" in complete("shelfguard sta")
    assert {"--dry-run", "--keep-days"} <= complete("shelfguard gc --")
    assert {"bash", "zsh", "fish"} <= complete("shelfguard completion ")


def test_the_ledger_commands_import_no_airflow(sg_home: Settings) -> None:
    """approve, reject, status, history, batches and verify work on a ledger alone: what
    they import must not pull in Airflow (seconds of start-up, and a dependency an
    approver's laptop need not have)."""
    code = (
        "import sys\n"
        "from shelfguard.cli import main\n"
        "for argv in (['status'], ['history'], ['batches'], ['verify'],\n"
        "             ['approve', 'latest', '--by', 'bob'], ['reject', 'latest', '--by', 'bob']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('loaded:', sorted({m for m in sys.modules if m.split('.')[0] == 'airflow'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (loaded,) = [line for line in done.stdout.splitlines() if line.startswith("loaded:")]
    assert loaded == "loaded: []", loaded[:2000]
