#!/usr/bin/env bash
# One-shot setup of docker/compose.yaml, run by the airflow-init service as root before any
# other Airflow service starts (they wait for it to complete): the metadata schema, the
# `gpu` pool, the UI login, and the ownership of the shared volumes. Safe to re-run.
set -euo pipefail

uid="$(id -u airflow)"
passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?must name the passwords file}"

echo "airflow-init: metadata database"
airflow db migrate

# One slot: the gpu-worker has one GPU, and train and score must not share it.
echo "airflow-init: pool gpu (${RECSYS_GPU_POOL_SLOTS:-1} slot)"
airflow pools set gpu "${RECSYS_GPU_POOL_SLOTS:-1}" "GPU tasks (train, score): one per GPU on the gpu-worker"

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
