"""One record per run: what each step of a ``ds`` produced, gathered from its manifests.

The nightly DAG's last task calls ``record_run_metrics``; the record is written to
``metrics/ds=…/run.json`` (replaced when the date is re-run) so a team can chart row
counts, users, validation metrics and durations over time without Airflow's database.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from recsys_core import fs_swap
from recsys_core.paths import Warehouse

log = logging.getLogger(__name__)
RUN_FILE = "run.json"


def _read(path: str) -> dict | None:
    return fs_swap.read_json(path) if fs_swap.exists(path) else None


def collect_run_metrics(warehouse: Warehouse, ds: str) -> dict:
    """The run's figures; a step whose output is missing shows as ``None``."""
    snapshot = _read(f"{warehouse.snapshot(ds)}/manifest.json")
    features = _read(f"{warehouse.features(ds)}/manifest.json")
    model = _read(f"{warehouse.models(ds)}/manifest.json")
    scored = warehouse.recommendations_staging(ds)  # the score and check jobs' notes stay there
    scoring = _read(f"{scored}/_scoring.json")
    check = _read(f"{scored}/_check.json")
    files = (snapshot or {}).get("files", {})
    return {
        "ds": ds,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ingest": snapshot and {
            "users": snapshot.get("users"),
            "rated_films": snapshot.get("rated_films"),
            "kept": {name: f.get("kept") for name, f in files.items()},
            "rejected": {name: f.get("rejected") for name, f in files.items()},
            "last_rating": snapshot.get("last_rating"),
        },
        "features": features and features.get("counts"),
        "training": model and {
            "device": model.get("device"),
            "epochs_run": model.get("epochs_run"),
            "best_epoch": model.get("best_epoch"),
            "seconds": model.get("wall_seconds"),
            "validation": model.get("metrics"),
        },
        "scoring": scoring and {k: scoring.get(k) for k in ("users", "rows", "popularity_users", "top_n",
                                                             "model_version", "device", "seconds", "engine",
                                                             "master")},
        "check": check,
    }  # fmt: skip


def record_run_metrics(warehouse: Warehouse | str, ds: str) -> dict:
    """Collect the run's figures and publish them as ``metrics/ds=…/run.json``."""
    warehouse = warehouse if isinstance(warehouse, Warehouse) else Warehouse(warehouse)
    record = collect_run_metrics(warehouse, ds)

    def write(staging: str) -> None:
        fs_swap.write_json(f"{staging}/{RUN_FILE}", record)

    fs_swap.publish_dir(warehouse.metrics(ds), write)
    log.info("run metrics ds=%s: %s", ds, json.dumps(record))
    return record
