"""initial ledger schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 00:00:00+00:00

Written by hand and checked against ``models.py`` by the drift test in
``tests/ledger``. The enum lists in the CHECK constraints are spelled out on
purpose: a migration records the schema as it was, so it must not import the
models' current constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("dag_id", sa.String(), nullable=False),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("blocked_gate", sa.String(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("triggered_by", sa.String(), nullable=True),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_runs")),
        sa.CheckConstraint(
            "outcome IN ('RUNNING', 'OK', 'PROMOTED', 'BLOCKED', 'REJECTED', 'FAILED')",
            name=op.f("ck_runs_outcome"),
        ),
    )
    op.create_index(op.f("ix_runs_dag_id"), "runs", ["dag_id"])
    op.create_index(op.f("ix_runs_started_at"), "runs", ["started_at"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("uri", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("produced_by_run", sa.String(), nullable=True),
        _timestamp("created_at"),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.ForeignKeyConstraint(
            ["produced_by_run"], ["runs.run_id"], name=op.f("fk_artifacts_produced_by_run_runs")
        ),
        sa.UniqueConstraint("kind", "sha256", name=op.f("uq_artifacts_kind_sha256")),
    )

    op.create_table(
        "gate_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("gate", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("report_uri", sa.String(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_results")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_gate_results_run_id_runs")
        ),
        sa.UniqueConstraint(
            "run_id", "gate", "subject", name=op.f("uq_gate_results_run_id_gate_subject")
        ),
        sa.CheckConstraint(
            "status IN ('pass', 'fail', 'warn')", name=op.f("ck_gate_results_status")
        ),
    )

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("model_sha256", sa.String(), nullable=False),
        sa.Column("index_sha256", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=False),
        _timestamp("decided_at"),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("policy_sha256", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f("fk_approvals_run_id_runs")),
        sa.CheckConstraint(
            "decision IN ('approved', 'rejected')", name=op.f("ck_approvals_decision")
        ),
        sa.CheckConstraint(
            "via IN ('policy', 'hitl', 'cli', 'timeout')", name=op.f("ck_approvals_via")
        ),
    )
    op.create_index(op.f("ix_approvals_run_id"), "approvals", ["run_id"])

    op.create_table(
        "aliases",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("model_artifact_id", sa.Integer(), nullable=False),
        sa.Column("index_artifact_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        _timestamp("updated_at"),
        sa.Column("updated_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_aliases")),
        sa.ForeignKeyConstraint(
            ["model_artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_aliases_model_artifact_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["index_artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_aliases_index_artifact_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f("fk_aliases_run_id_runs")),
    )

    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("model_artifact_id", sa.Integer(), nullable=False),
        sa.Column("index_artifact_id", sa.Integer(), nullable=False),
        sa.Column("previous_model_artifact_id", sa.Integer(), nullable=True),
        sa.Column("previous_index_artifact_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("moved_by", sa.String(), nullable=False),
        _timestamp("moved_at"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_history")),
        sa.ForeignKeyConstraint(
            ["alias"], ["aliases.name"], name=op.f("fk_alias_history_alias_aliases")
        ),
        sa.ForeignKeyConstraint(
            ["model_artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_alias_history_model_artifact_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["index_artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_alias_history_index_artifact_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["previous_model_artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_alias_history_previous_model_artifact_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["previous_index_artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_alias_history_previous_index_artifact_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_alias_history_run_id_runs")
        ),
        sa.UniqueConstraint("alias", "version", name=op.f("uq_alias_history_alias_version")),
        sa.CheckConstraint(
            "action IN ('promote', 'rollback')", name=op.f("ck_alias_history_action")
        ),
    )

    op.create_table(
        "ingest_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("batch_id", sa.String(), nullable=False),
        sa.Column("file_name", sa.String(), nullable=False),
        sa.Column("table_name", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows_read", sa.BigInteger(), nullable=False),
        sa.Column("rows_accepted", sa.BigInteger(), nullable=False),
        sa.Column("rows_quarantined", sa.BigInteger(), nullable=False),
        sa.Column("quarantine_by_reason", sa.JSON(), nullable=False),
        sa.Column("extra_columns", sa.JSON(), nullable=False),
        _timestamp("ingested_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_files")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_ingest_files_run_id_runs")
        ),
        sa.UniqueConstraint("table_name", "sha256", name=op.f("uq_ingest_files_table_name_sha256")),
    )
    op.create_index(op.f("ix_ingest_files_batch_id"), "ingest_files", ["batch_id"])
    op.create_index(op.f("ix_ingest_files_run_id"), "ingest_files", ["run_id"])


def downgrade() -> None:
    # Reverse dependency order; dropping a table drops its indexes with it.
    for table in (
        "ingest_files",
        "alias_history",
        "aliases",
        "approvals",
        "gate_results",
        "artifacts",
        "runs",
    ):
        op.drop_table(table)
