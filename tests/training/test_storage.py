"""URIs in and out of the entry points: fsspec's memory:// and file:// stand in for s3://."""

from __future__ import annotations

import json
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shelfguard_train import storage
from shelfguard_train.cli import EXIT_BAD_INPUT, EXIT_OK, main
from shelfguard_train.config import (
    ConfigError,
    EmbedConfig,
    EvalConfig,
    TrainConfig,
    load_config,
)
from shelfguard_train.embed import INDEX_FILES, index_sha256
from shelfguard_train.model import model_sha256
from shelfguard_train.storage import STAGING_DIR_ENV, staged


@pytest.fixture
def mem() -> Iterator[tuple[Any, str]]:
    """The in-process memory filesystem and a fresh root URI in it (removed afterwards)."""
    fs = fsspec.filesystem("memory")
    root = f"memory://sg-{uuid.uuid4().hex[:12]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``SHELFGUARD_STAGING_DIR`` pointed at an empty folder, to see what is left in it."""
    folder = tmp_path / "staging"
    monkeypatch.setenv(STAGING_DIR_ENV, str(folder))
    return folder


def put_tree(fs: Any, local: Path, uri: str) -> None:
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.pipe_file(f"{uri}/{file.relative_to(local).as_posix()}", file.read_bytes())


def get_tree(fs: Any, uri: str, local: Path) -> Path:
    _, root = fsspec.core.url_to_fs(uri)
    for name in fs.find(uri):
        target = local / posixpath.relpath(name, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(name))
    return local


def read_json(fs: Any, uri: str) -> Any:
    return json.loads(fs.cat_file(uri))


def put_json(fs: Any, uri: str, payload: dict[str, Any]) -> str:
    fs.pipe_file(uri, json.dumps(payload).encode())
    return uri


def error_line(err: str) -> str:
    # In-process, other output may precede it; the error is the one last line.
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_embed_reads_and_writes_memory_uris(
    mem: tuple[Any, str],
    staging: Path,
    tiny_data: Path,
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fs, root = mem
    put_tree(fs, tiny_model, f"{root}/models/tiny")
    for name in ("products.parquet", "golden.parquet"):
        fs.pipe_file(f"{root}/data/{name}", (tiny_data / name).read_bytes())
    config = put_json(
        fs,
        f"{root}/run/embed.json",
        {
            "model_dir": f"{root}/models/tiny",
            # Relative paths resolve against the config URI's parent.
            "products_path": "../data/products.parquet",
            "golden_path": f"{root}/data/golden.parquet",
            "output_dir": "index",
            "batch_size": 32,
            "ann_sample_size": 50,
            "device": "cpu",
        },
    )
    result_uri = f"{root}/run/result.json"

    assert main(["embed", "--config", config, "--result-out", result_uri]) == EXIT_OK

    printed = json.loads(capsys.readouterr().out)
    result = read_json(fs, result_uri)
    assert result == printed
    assert result["index_dir"] == f"{root}/run/index"
    names = sorted(posixpath.basename(name) for name in fs.find(result["index_dir"]))
    assert names == sorted(INDEX_FILES)
    downloaded = get_tree(fs, result["index_dir"], tmp_path / "downloaded")
    assert index_sha256(downloaded) == result["index_sha256"]
    assert result["model_sha256"] == model_sha256(tiny_model)
    assert result["checks"]["coverage"]["missing"]["count"] == 0
    assert result["checks"]["canary"]["queries"] > 0
    # No staging path leaks into the result, and the staging folder is cleaned up.
    assert str(staging) not in json.dumps(result)
    assert list(staging.iterdir()) == []


def test_evaluate_round_trips_file_uris(
    tiny_data: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_model, store / "models" / "tiny")
    (store / "data").mkdir()
    for name in ("products.parquet", "golden.parquet"):
        shutil.copyfile(tiny_data / name, store / "data" / name)
    (store / "eval.json").write_text(
        json.dumps(
            {
                "data_dir": "data",
                "models": {"tiny": "models/tiny"},
                "output_path": "out/evaluation.json",
                "ks": [10],
                "batch_size": 32,
                "device": "cpu",
            }
        )
    )
    uri = store.as_uri()

    code = main(
        ["evaluate", "--config", f"{uri}/eval.json", "--result-out", f"{uri}/out/result.json"]
    )

    assert code == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((store / "out" / "evaluation.json").read_text())
    assert report == printed == json.loads((store / "out" / "result.json").read_text())
    assert set(report["models"]) == {"tiny", "bm25"}
    # The report names the model by its URI, with the sha256 of the staged copy.
    assert report["models"]["tiny"]["model_path"] == f"{uri}/models/tiny"
    assert report["models"]["tiny"]["model_sha256"] == model_sha256(tiny_model)
    assert sorted(p.name for p in (store / "out").iterdir()) == ["evaluation.json", "result.json"]


def test_a_missing_input_uri_exits_2_naming_it_and_uploads_nothing(
    mem: tuple[Any, str],
    staging: Path,
    tiny_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fs, root = mem
    fs.pipe_file(f"{root}/data/products.parquet", (tiny_data / "products.parquet").read_bytes())
    missing = f"{root}/models/nowhere"
    config = put_json(
        fs,
        f"{root}/run/embed.json",
        {
            "model_dir": missing,
            "products_path": f"{root}/data/products.parquet",
            "output_dir": f"{root}/run/index",
            "device": "cpu",
        },
    )

    code = main(["embed", "--config", config, "--result-out", f"{root}/run/result.json"])

    assert code == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        error_line(captured.err) == f"shelfguard_train embed: input model_dir not found: {missing}"
    )
    assert not fs.exists(f"{root}/run/index")
    assert not fs.exists(f"{root}/run/result.json")
    assert list(staging.iterdir()) == []


def test_a_failed_run_uploads_nothing_and_its_error_names_the_uri(
    mem: tuple[Any, str],
    staging: Path,
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fs, root = mem
    put_tree(fs, tiny_model, f"{root}/models/tiny")
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"product_id": [1, 2]}), bad)
    fs.pipe_file(f"{root}/data/products.parquet", bad.read_bytes())
    config = put_json(
        fs,
        f"{root}/run/embed.json",
        {
            "model_dir": "../models/tiny",
            "products_path": "../data/products.parquet",
            "output_dir": "index",
            "device": "cpu",
        },
    )

    code = main(["embed", "--config", config, "--result-out", f"{root}/run/result.json"])

    assert code == EXIT_BAD_INPUT
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"shelfguard_train embed: {root}/data/products.parquet: missing column")
    assert str(staging) not in line
    assert fs.find(f"{root}/run") == [f"/{root.removeprefix('memory://')}/run/embed.json"]
    assert list(staging.iterdir()) == []


def test_finish_uploads_the_output_then_the_result_and_a_failure_uploads_nothing(
    mem: tuple[Any, str], staging: Path
) -> None:
    fs, root = mem
    fs.pipe_file(f"{root}/model/weights.bin", b"w")
    fs.pipe_file(f"{root}/products.parquet", b"p")
    # An older run's leftovers: a sub-folder the run rewrites, and an unrelated file.
    fs.pipe_file(f"{root}/out/sub/stale.txt", b"old")
    fs.pipe_file(f"{root}/out/keep.txt", b"kept")
    config = put_json(
        fs,
        f"{root}/embed.json",
        {"model_dir": "model", "products_path": "products.parquet", "output_dir": "out"},
    )

    with pytest.raises(RuntimeError, match="boom"), staged(EmbedConfig, config) as (cfg, _):
        (cfg.output_dir / "sub").mkdir(parents=True)
        (cfg.output_dir / "sub" / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert fs.cat_file(f"{root}/out/sub/stale.txt") == b"old"
    assert list(staging.iterdir()) == []

    with staged(EmbedConfig, config, f"{root}/result.json") as (cfg, finish):
        assert (cfg.model_dir / "weights.bin").read_bytes() == b"w"
        assert cfg.products_path.read_bytes() == b"p"
        (cfg.output_dir / "sub").mkdir(parents=True)
        (cfg.output_dir / "sub" / "new.txt").write_text("new")
        (cfg.output_dir / "top.txt").write_text("top")
        assert not fs.exists(f"{root}/result.json")
        result = finish({"index_dir": str(cfg.output_dir), "n": 1})
    assert result == {"index_dir": f"{root}/out", "n": 1}
    assert read_json(fs, f"{root}/result.json") == result
    assert fs.cat_file(f"{root}/out/sub/new.txt") == b"new"
    assert fs.cat_file(f"{root}/out/top.txt") == b"top"
    assert fs.cat_file(f"{root}/out/keep.txt") == b"kept"
    assert not fs.exists(f"{root}/out/sub/stale.txt")
    assert list(staging.iterdir()) == []


def test_plain_paths_are_loaded_as_before_without_staging(tmp_path: Path, staging: Path) -> None:
    config = tmp_path / "cfg" / "eval.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps({"data_dir": "../data", "models": {"m": "m"}, "output_path": "out.json"})
    )
    out = tmp_path / "result.json"
    with staged(EvalConfig, str(config), out) as (cfg, finish):
        assert cfg == load_config(config, EvalConfig)
        assert cfg.data_dir == tmp_path / "data"
        assert finish({"models": {}, "path": str(cfg.data_dir)}) == {
            "models": {},
            "path": str(tmp_path / "data"),
        }
    assert json.loads(out.read_text()) == {"models": {}, "path": str(tmp_path / "data")}
    assert not staging.exists()


def test_a_local_config_may_name_uris_and_keeps_its_relative_paths(
    mem: tuple[Any, str], tmp_path: Path, staging: Path
) -> None:
    fs, root = mem
    fs.pipe_file(f"{root}/data/pairs.parquet", b"x")
    config = tmp_path / "train.json"
    config.write_text(
        json.dumps(
            {
                "data_dir": f"{root}/data",
                "base_model": "base",
                "output_dir": f"{root}/runs/1",
                "data_snapshot_id": "s",
            }
        )
    )
    with staged(TrainConfig, config) as (cfg, _):
        assert cfg.base_model == tmp_path / "base"
        assert (cfg.data_dir / "pairs.parquet").read_bytes() == b"x"
        assert cfg.data_dir.is_relative_to(staging)
        assert cfg.output_dir.is_relative_to(staging)
        assert not cfg.output_dir.exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_dir": "nope://x/m"}, "input model_dir nope://x/m: Protocol not known: nope"),
        ({"output_dir": "nope://x/o"}, "output output_dir nope://x/o: Protocol not known: nope"),
        ({"batch_size": 0}, "{config}: batch_size must be >= 1, got 0"),
        ({"lr": 1}, "{config}: unknown key(s) lr"),
    ],
)
def test_config_errors_name_the_uris(
    mem: tuple[Any, str], staging: Path, config: dict[str, Any], message: str
) -> None:
    fs, root = mem
    fs.pipe_file(f"{root}/model/w.bin", b"w")
    fs.pipe_file(f"{root}/products.parquet", b"p")
    payload = {"model_dir": "model", "products_path": "products.parquet", "output_dir": "out"}
    uri = put_json(fs, f"{root}/embed.json", {**payload, **config})
    with pytest.raises(ConfigError) as caught, staged(EmbedConfig, uri):
        pass
    assert str(caught.value).startswith(message.format(config=uri))
    assert list(staging.iterdir()) == []


def test_a_missing_config_uri_is_a_config_error(mem: tuple[Any, str]) -> None:
    _, root = mem
    with (
        pytest.raises(ConfigError, match="config file not found: memory://"),
        staged(EmbedConfig, f"{root}/embed.json"),
    ):
        pass


def test_relative_paths_resolve_against_the_config_location(tmp_path: Path) -> None:
    locate = storage._locate
    assert locate("index", "s3://bucket/runs/1/embed.json") == "s3://bucket/runs/1/index"
    assert (
        locate("../data/p.parquet", "s3://bucket/runs/1/e.json")
        == "s3://bucket/runs/data/p.parquet"
    )
    assert locate("gs://other/m", "s3://bucket/e.json") == "gs://other/m"
    assert locate("/opt/base", "s3://bucket/e.json") == "/opt/base"
    assert locate("m", "file:///srv/cfg/e.json") == "file:///srv/cfg/m"
    assert locate("m", tmp_path / "cfg" / "e.json") == str(tmp_path / "cfg" / "m")
    assert storage.is_uri("simplecache::s3://b/k") and not storage.is_uri("/a/b")
    assert not storage.is_uri("relative/path") and not storage.is_uri(Path("s3://b"))


def test_every_path_field_is_an_input_or_the_output() -> None:
    for config_cls, spec in storage._SPECS.items():
        named = {*spec.inputs, spec.output} - {"models"}
        assert named == set(config_cls._PATH_FIELDS), config_cls
