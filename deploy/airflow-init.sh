#!/usr/bin/env bash
# One-shot initialisation of the compose deployment (service `airflow-init`); every step
# is idempotent, so `docker compose up` may run it on every start. The image's entrypoint
# has already waited for the metadata database when this runs.
#
#   1. migrate Airflow's metadata database;
#   2. migrate the shelfguard ledger to the newest Alembic revision (there is no
#      `shelfguard` subcommand for it: open_ledger() migrates, as every ledger user does);
#   3. write the UI users' passwords for Airflow's SimpleAuthManager from the environment:
#      every user in AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS needs AIRFLOW_PASSWORD_<NAME>
#      (upper case, "-" -> "_"), e.g. governance-owner -> AIRFLOW_PASSWORD_GOVERNANCE_OWNER;
#   4. print the ledger status through the shelfguard CLI (a smoke test of the image).
#
# Connections: the only one the DAGs need, kubernetes_default, comes from the environment
# (AIRFLOW_CONN_KUBERNETES_DEFAULT in docker-compose.yml), so nothing is stored here.
set -euo pipefail

echo "== Airflow $(airflow version)"

echo "== migrating the Airflow metadata database"
airflow db migrate

echo "== migrating the shelfguard ledger"
python - <<'PY'
from shelfguard.config import load_settings
from shelfguard.ledger import open_ledger

settings = load_settings()
settings.ensure_dirs()
open_ledger(settings.ledger_url).dispose()
print("ledger schema at head:", settings.ledger_url.rsplit("@", 1)[-1])
PY

echo "== writing the UI users' passwords"
python - <<'PY'
import json
import os
import sys
from pathlib import Path

users = [
    item.split(":")[0].strip()
    for item in os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")
    if item.strip()
]
passwords = {}
missing = []
for user in users:
    variable = "AIRFLOW_PASSWORD_" + user.upper().replace("-", "_")
    value = os.environ.get(variable, "")
    if value:
        passwords[user] = value
    else:
        missing.append(variable)
if missing:
    sys.exit("airflow-init: no password for " + ", ".join(missing) + " (see .env.example)")
target = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
target.parent.mkdir(parents=True, exist_ok=True)
partial = target.with_suffix(".tmp")
partial.write_text(json.dumps(passwords) + "\n", encoding="utf-8")
partial.chmod(0o600)
partial.replace(target)
print("users:", ", ".join(users))
PY

echo "== shelfguard status"
shelfguard status

echo "== airflow-init done"
