"""Every CLI error path prints one line and exits 2 (bad input) or 1 (failure), never a traceback.

The commands run in-process through ``shelfguard.cli.main`` on a fresh home, with
arguments a careless or hostile user could type. Only arguments that fail before any
DAG runs are used, so the walk stays fast.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from shelfguard.cli import build_parser, main
from shelfguard.cli import common as cli
from shelfguard.data.ingest import SPECS


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("SHELFGUARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SHELFGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHELFGUARD_KEYS_DIR", str(tmp_path / "keys"))
    return tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process; what it said on its two consoles, and its exit code.

    An exception escaping ``main`` fails the test by itself; what the libraries it
    imports log (Airflow, Alembic) is not the CLI's output and is left out.
    """
    said = io.StringIO()
    consoles = (cli.console, cli.out)
    cli.console = Console(file=said, soft_wrap=True, width=100)
    cli.out = Console(file=said, soft_wrap=True, width=100)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing an argument: usage + one error line
        code = int(exc.code or 0)
        said.write(capsys.readouterr().err)
    finally:
        cli.console, cli.out = consoles
    capsys.readouterr()
    text = said.getvalue()
    assert "Traceback" not in text, text
    return code, text


def hostile_cases(tmp: Path) -> list[tuple[list[str], int]]:
    a_file = tmp / "a-file"
    a_file.write_text("not a folder\n")
    outside = tmp / "secret.txt"
    outside.write_text("root:x:0:0:the first line of a secret\n")
    linked = tmp / "linked"
    linked.mkdir()
    (linked / "product.csv").symlink_to(outside)
    return [
        (["generate", "--out", str(a_file / "sub")], 2),
        (["generate", "--out", str(a_file)], 2),
        (["generate", "--out", str(tmp / "g"), "--products", "-5"], 2),
        (["generate", "--out", str(tmp / "g"), "--defects", "no_such_defect"], 2),
        (["generate", "--out", str(tmp / "g"), "--week", "0"], 2),
        (["generate", "--out", str(tmp / "g"), "--week", "2", "--defects", "empty_names"], 2),
        (["ingest", "--source", str(tmp / "missing")], 2),
        (["ingest", "--source", str(a_file)], 2),
        (["ingest", "--source", str(linked)], 2),
        (["run", "no_such_dag"], 2),
        (["run", "catalog_refresh", "--conf", "{not json"], 2),
        (["run", "catalog_refresh", "--conf", "[1, 2]"], 2),
        (["status", "--limit", "-5"], 2),
        (["status", "--limit", "0"], 2),
        (["batches", "--limit", "-1"], 2),
        (["batches", "--state", "nonsense"], 2),
        (["batches", "purge", "batch-nope", "--by", "dpo", "--reason", "r"], 2),
        (["batches", "purge", "batch-nope", "--by", " ", "--reason", "r"], 2),
        (["report", "no/such-run"], 2),
        (["approve", "no/such-run", "--by", "bob"], 2),
        (["reject", "latest", "--by", "bob"], 2),
        (["rollback", "--by", "governance-owner"], 2),
        (["rollback", "--by", "mallory"], 2),
        (["keys", "new", "../../etc/evil"], 2),
        (["keys", "new", ""], 2),
        (["keys", "show", "nobody"], 2),
        (["policy", "approve", str(tmp / "missing.yml"), "--by", "nobody"], 2),
        (["policy", "approve", "--by", "../x"], 2),
        (["policy", "nonsense"], 2),
        (["run", "catalog_refresh", "--source", str(tmp / "missing")], 2),
        (["run", "catalog_refresh", "--source", str(a_file)], 2),
        (["history", "--limit", "0"], 2),
        (["gc", "--keep-days", "-1"], 2),
        (["gc", "--keep-days", "nan"], 2),
        (["search", ""], 2),
        (["search", "oak", "-k", "0"], 2),
        (["search", "oak"], 2),
        (["ui", "--port", "0"], 2),
        (["ui", "--port", "70000"], 2),
        (["serve", "--port", "0"], 2),
        (["serve", "--workers", "0"], 2),
        (["serve", "--click-window", "-1"], 2),
        (["serve", "--canary-share", "0.9"], 2),
        (["canary", "status"], 2),  # no canary is running on a fresh home
        (["simulate", "--sessions", "0"], 2),
        (["simulate", "--sessions", "5", "--url", "http://10.0.0.1:8080"], 2),
        (["simulate", "--sessions", "5", "--url", "file:///etc/passwd"], 2),
        (["simulate", "--sessions", "5", "--products", "-5"], 2),
        (["simulate", "--sessions", "5", "--week", "-1"], 2),
        (["completion", "powershell"], 2),
        # verify takes no argument that could be hostile: on a fresh home it says OK.
        (["verify"], 0),
    ]


def test_every_hostile_argument_gets_one_line_and_an_exit_code(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, expected in hostile_cases(home):
        code, said = run(argv, capsys)
        assert code == expected, (argv, code, said)
        assert said.strip(), argv
        assert len(said.strip().splitlines()) <= 3, (argv, said)
        assert "the first line of a secret" not in said, argv


def test_a_symlink_outside_the_source_quotes_nothing_of_its_target(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile_cases(home)  # lays out the folders
    code, said = run(["ingest", "--source", str(home / "linked")], capsys)
    assert code == 2
    assert "symbolic link" in said
    assert "secret" not in said and "root:x" not in said


def test_a_symlink_inside_the_source_is_followed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = home / "inside"
    source.mkdir()
    real = source / "catalog-2026.tsv"
    columns = list(SPECS[0].columns)
    row = ["1", "oak table", "table", "furniture", "d", "", "1", "4.5", "1"]
    real.write_text("\t".join(columns) + "\n" + "\t".join(row) + "\n")
    (source / "product.csv").symlink_to(real.name)
    code, said = run(["ingest", "--source", str(source), "--json"], capsys)
    assert code == 0, said


def test_every_subcommand_is_walked(tmp_path: Path) -> None:
    (choices,) = [
        set(action.choices)  # type: ignore[arg-type]
        for action in build_parser()._actions
        if action.dest == "command"
    ]
    walked = {argv[0] for argv, _ in hostile_cases(tmp_path)}
    # demo runs the whole pipeline: it has no argument that fails before it starts.
    assert choices - walked == {"demo"}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(max_value=0),
    text=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=200,
    ),
)
def test_any_bad_limit_or_run_id_is_a_one_line_refusal(
    home: Path, capsys: pytest.CaptureFixture[str], limit: int, text: str
) -> None:
    code, said = run(["status", "--limit", str(limit)], capsys)
    assert code == 2 and len(said.strip().splitlines()) <= 2
    code, said = run(["report", "r" + text], capsys)
    assert code in (1, 2) and len(said.strip().splitlines()) <= 4, said


def test_an_unexpected_failure_is_one_line_and_exit_1(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ledger that is not a database (a folder where the file should be).
    (home / "home").mkdir(parents=True, exist_ok=True)
    (home / "home" / "ledger.sqlite").mkdir()
    code, said = run(["status"], capsys)
    assert code == 1, said
    assert said.startswith("error: ") and len(said.strip().splitlines()) == 1, said
    assert "SHELFGUARD_DEBUG=1" in said
    monkeypatch.setenv("SHELFGUARD_DEBUG", "1")
    with pytest.raises(Exception):  # noqa: B017 (debug mode re-raises whatever it was)
        main(["status"])
