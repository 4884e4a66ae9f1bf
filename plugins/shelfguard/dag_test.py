"""``airflow dags test`` without its one-second idle waits between dependency passes.

``Dag.test()`` runs the tasks one by one in this process. When a gate blocks, each
pass of its loop marks one more level of the tasks below the gate
``upstream_failed`` and then, finding nothing to run, sleeps a whole second before
the next pass: a run blocked at the raw-data gate spent about nine seconds
walking the dbt task group and the index tasks down to ``finalize``. Nothing can
change in those seconds (the tasks run here, synchronously, and the embedded
runtime has no triggerer), so this entry point shortens the sleeps made by
``Dag.test()`` itself to ``IDLE_POLL_SECONDS``; every other ``time.sleep`` in the
process, tasks' included, is untouched. Everything else is Airflow's own CLI.

Usage (what :func:`shelfguard.embedded.run_dag` runs)::

    python -m shelfguard.dag_test DAG_ID -f DAG_FILE -c CONF_JSON
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from types import CodeType

IDLE_POLL_SECONDS = 0.05


def shorten_idle_waits(code: CodeType, poll: float = IDLE_POLL_SECONDS) -> Callable[[float], None]:
    """Make ``time.sleep`` called directly from ``code`` wait at most ``poll`` seconds.

    Returns the original ``time.sleep`` (already replaced when this returns).
    """
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        caller = sys._getframe(1).f_code
        real_sleep(min(seconds, poll) if caller is code else seconds)

    time.sleep = sleep
    return real_sleep


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``airflow dags test`` with ``argv`` (default: this process's arguments)."""
    from airflow.sdk.definitions.dag import DAG

    shorten_idle_waits(DAG.test.__code__)
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", "dags", "test", *(sys.argv[1:] if argv is None else argv)]
    airflow_main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
