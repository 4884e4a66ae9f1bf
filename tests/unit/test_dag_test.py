"""The embedded runner's `airflow dags test` entry point: only Dag.test's idle waits shrink."""

from __future__ import annotations

import time

import pytest

from shelfguard.dag_test import IDLE_POLL_SECONDS, shorten_idle_waits


def _idle_loop() -> None:
    time.sleep(1)


def _task_code() -> None:
    time.sleep(1)


def test_only_the_given_code_waits_less(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # restored after the test
    real = shorten_idle_waits(_idle_loop.__code__)
    assert real == slept.append

    _idle_loop()
    _task_code()
    time.sleep(2)

    assert slept == [IDLE_POLL_SECONDS, 1, 2]


def test_dag_test_still_has_the_waits_it_shortens() -> None:
    """An Airflow upgrade that drops or moves the idle sleep makes the shortcut dead code."""
    from airflow.sdk.definitions.dag import DAG

    assert "sleep" in DAG.test.__code__.co_names
