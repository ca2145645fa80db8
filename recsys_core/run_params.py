"""The DAG's first task: check a run's date and Params before any heavy work starts.

Airflow validates Params against their JSON schema when a run is triggered, but JSON
Schema counts ``10.0`` as an integer, and a few rules (the date, retention, the drop's
directory) are not schema rules. ``validate_run`` checks them all in well under a
second, so a bad value fails the run before ingest, features and training rather than
in ``score`` an hour later, and returns the values the jobs will get (integral numbers
such as ``10.0`` coerced to ``10``; the DAG's templates coerce the same way).
"""

from __future__ import annotations

import math
import os
import re

from recsys_core.dates import parse_ds
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse

MAX_TOP_N = 32767  # rank is a smallint
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


def whole(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """An integer Param; a float with no fractional part (``10.0``) is taken as that integer."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"param {name} must be a whole number, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"param {name} must be a whole number, got {value!r}")
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"param {name} must be {bounds}, got {value}")
    return value


def number(name: str, value: object, low: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"param {name} must be a finite number, got {value!r}")
    if value < low or (strict and value == low):
        raise ConfigError(f"param {name} must be {'>' if strict else '>='} {low}, got {value}")
    return float(value)


def validate_run(ds: str, raw: str, warehouse: str, params: dict) -> dict:
    """Check the run for ``ds``; return the checked values (ConfigError / InputError otherwise)."""
    parse_ds(ds)
    checked = {
        "ds": ds,
        "top_n": whole("top_n", params.get("top_n"), 1, MAX_TOP_N),
        "min_film_ratings": whole("min_film_ratings", params.get("min_film_ratings"), 1),
        "max_epochs": whole("max_epochs", params.get("max_epochs"), 1),
        "max_minutes": number("max_minutes", params.get("max_minutes"), 0.0, strict=True),
        "seed": whole("seed", params.get("seed"), 0, 2**32 - 1),
        "min_model_ratio": number("min_model_ratio", params.get("min_model_ratio"), 0.0),
        "keep": whole("keep", params.get("keep"), 1),
    }
    conn_id = params.get("sql_conn_id", "")
    if not isinstance(conn_id, str) or not CONN_ID.match(conn_id):
        raise ConfigError(f"param sql_conn_id must be a connection id (letters, digits, _ . -), got {conn_id!r}")
    checked["sql_conn_id"] = conn_id
    if "://" not in raw and not os.path.isdir(raw):
        raise InputError(f"the raw drop directory {raw} does not exist (Variable recsys_raw_dir / $RECSYS_RAW_DIR)")

    from recsys_core.publish.parquet_table import published_ds
    from recsys_core.publish.publish import check_not_expired

    wh = Warehouse(warehouse)
    table_dir = wh.recommendations(ds).rsplit("/", 1)[0]
    check_not_expired(published_ds(table_dir), ds, checked["keep"])
    return checked
