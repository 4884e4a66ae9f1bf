#!/usr/bin/env bash
# Creates shelfguard's databases on the compose PostgreSQL server. The postgres image runs
# every script in /docker-entrypoint-initdb.d once, when it initialises an empty data
# directory (a fresh `postgres-data` volume); later starts skip it.
#
# One server, three databases, one login role per database. Each role owns its database
# and PUBLIC may not connect to any of them, so the Airflow metadata role cannot read the
# ledger and the warehouse role (the one dbt runs with) cannot rewrite governance evidence.
#
#   database              role                  holds
#   airflow               airflow               Airflow metadata, Celery task results
#   shelfguard_ledger     shelfguard_ledger     the governance ledger (SHELFGUARD_LEDGER_URL)
#   shelfguard_warehouse  shelfguard_warehouse  raw / staging / marts (SHELFGUARD_WAREHOUSE_URL)
#
# The passwords come from the service environment (docker-compose.yml, which requires
# them from .env; see .env.example); psql's :'var' syntax quotes them as SQL literals.
set -euo pipefail

psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB:-postgres}" \
    --set=airflow_password="${AIRFLOW_DB_PASSWORD}" \
    --set=ledger_password="${LEDGER_DB_PASSWORD}" \
    --set=warehouse_password="${WAREHOUSE_DB_PASSWORD}" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE shelfguard_ledger LOGIN PASSWORD :'ledger_password';
CREATE DATABASE shelfguard_ledger OWNER shelfguard_ledger;
REVOKE ALL ON DATABASE shelfguard_ledger FROM PUBLIC;

CREATE ROLE shelfguard_warehouse LOGIN PASSWORD :'warehouse_password';
CREATE DATABASE shelfguard_warehouse OWNER shelfguard_warehouse;
REVOKE ALL ON DATABASE shelfguard_warehouse FROM PUBLIC;
SQL

echo "shelfguard: created databases airflow, shelfguard_ledger, shelfguard_warehouse"
