"""A tiny random BERT to train from in seconds, for the tests that run a retraining.

A module of its own (not conftest.py) so test modules can import it by a unique name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from shelfguard.config import project_root


def tiny_model(data_dir: Path, root: Path) -> str:
    """A tiny random BERT built by the training tests' helper from the generated files
    in ``data_dir`` (its inputs and the model under ``root``); returns the model's path."""
    path = project_root() / "tests" / "training" / "conftest.py"
    spec = importlib.util.spec_from_file_location("training_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = module.build_training_inputs(data_dir, root / "tiny-inputs")
    return str(module.build_tiny_model(inputs, root / "tiny-model"))
