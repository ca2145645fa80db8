#!/usr/bin/env bash
# One-shot setup of docker/compose.yaml, run by the airflow-init service as root before any
# other Airflow service starts (they wait for it to complete): the metadata schema, the
# `recsys_warehouse` pool, the UI login, and the ownership of the shared volumes. Safe to re-run.
set -euo pipefail

uid="$(id -u airflow)"
passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?must name the passwords file}"

echo "airflow-init: metadata database"
airflow db migrate

# One slot: every task of the DAG that writes the warehouse is in this pool, so scheduled
# runs, manual runs and backfills never write at once (train and score, on the gpu queue,
# therefore never share the GPU either).
echo "airflow-init: pool recsys_warehouse (1 slot)"
airflow pools set recsys_warehouse 1 "one writer per warehouse (every writing task of the DAG)"

# SimpleAuthManager reads the login from this file; write the configured admin password so
# that it is not a generated one. Development default: admin / admin (compose.yaml).
echo "airflow-init: UI login for ${AIRFLOW_ADMIN_USER:-admin}"
mkdir -p "$(dirname "$passwords")"
python - "$passwords" <<'PY'
import json, os, sys
user = os.environ.get("AIRFLOW_ADMIN_USER", "admin")
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, f)
PY
chmod 0660 "$passwords"

# Named volumes start out owned by root. Airflow, the GPU worker and the Spark workers all
# run as uid $uid (group 0), so whoever writes a warehouse file, the others may replace it.
dirs=(/opt/airflow/logs "$(dirname "$passwords")")
case "${RECSYS_WAREHOUSE:-}" in /*) dirs+=("$RECSYS_WAREHOUSE") ;; esac
for dir in "${dirs[@]}"; do
    mkdir -p "$dir"
    find "$dir" ! -user "$uid" -exec chown "$uid:0" {} +
    chmod g+rwx "$dir"
done
echo "airflow-init: done"
