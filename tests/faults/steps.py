"""One step of a shelfguard run in a process of its own, for the failpoint matrix.

``python steps.py STEP ARG...`` with ``SHELFGUARD_HOME`` (and the keys and policy) in
the environment runs the same functions the DAG tasks run, without Airflow, so that a
failpoint armed in ``SHELFGUARD_FAILPOINTS`` kills this process and nothing else:

- ``land RUN SOURCE``: a catalog_refresh run's start (recovery included) and its
  ingest task (retention purge, ingest, landing the batch);
- ``start RUN``: what any run does first (recovery), as the next run after a crash;
- ``publish RUN``: a run's start recovery, then its publish task;
- ``register RUN``: the register-model and index-gate registration of a retraining run;
- ``promote RUN``: a retraining run's promote task.

The approval, rollback and purge steps are the ``shelfguard`` command itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shelfguard.airflow.tasks import land_source, promote_run, publish_candidate, recover
from shelfguard.config import Settings, load_settings
from shelfguard.data import publication
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.model import index as indexing
from shelfguard.model import training as modeling
from shelfguard.run_context import RunContext, pin_policy


def land(settings: Settings, ledger: Ledger, run_id: str, source: Path) -> None:
    """A catalog_refresh run's start (unless it started already) and its ingest task."""
    policy = pin_policy(ledger, settings.home)
    if ledger.get_run(run_id) is None:
        ledger.start_run(
            run_id,
            "catalog_refresh",
            triggered_by="cron",
            lineage={
                "policy_sha256": policy.sha256,
                "marts_schema": publication.snapshot_schema(run_id),
            },
        )
    land_source(settings, ledger, run_id, policy, source)


def main(argv: list[str]) -> int:
    step, run_id, *rest = argv
    settings = load_settings()
    ledger = open_ledger(settings.ledger_url)
    try:
        if step == "land":
            recover(settings, ledger)
            land(settings, ledger, run_id, Path(rest[0]))
        elif step == "start":
            recover(settings, ledger)
            policy = pin_policy(ledger, settings.home)
            ledger.start_run(
                run_id,
                "catalog_refresh",
                triggered_by="cron",
                lineage={"policy_sha256": policy.sha256},
            )
        elif step == "publish":
            recover(settings, ledger)
            publish_candidate(RunContext.for_run(run_id, settings=settings, ledger=ledger))
        elif step == "register":
            modeling.register_model(settings, ledger, run_id)
            indexing.register_index(settings, ledger, run_id)
        elif step == "promote":
            promote_run(RunContext.for_run(run_id, settings=settings, ledger=ledger))
        else:
            raise SystemExit(f"unknown step {step!r}")
    finally:
        ledger.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
