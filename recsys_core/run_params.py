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
from recsys_core.defaults import RUN_PARAMS, RunParam
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse


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


def checked_param(name: str, spec: RunParam, value: object) -> int | float | str:
    """``value`` of the Param ``name`` within the bounds of ``spec`` (the DAG's own Param schema)."""
    if spec.kind == "integer":
        low, high = spec.minimum, spec.maximum
        return whole(name, value, None if low is None else int(low), None if high is None else int(high))
    if spec.kind == "number":
        return number(name, value, float(spec.minimum if spec.minimum is not None else -math.inf),
                      strict=spec.exclusive_minimum)  # fmt: skip
    if not isinstance(value, str) or (spec.pattern and not re.match(spec.pattern, value)):
        raise ConfigError(f"param {name} must match {spec.pattern} ({spec.description}), got {value!r}")
    return value


def validate_run(ds: str, raw: str, warehouse: str, params: dict) -> dict:
    """Check the run for ``ds``; return the checked values (ConfigError / InputError otherwise)."""
    parse_ds(ds)
    checked: dict = {"ds": ds}
    for name, spec in RUN_PARAMS.items():
        checked[name] = checked_param(name, spec, params.get(name, spec.default))  # absent: the DAG's default
    if "://" not in raw and not os.path.isdir(raw):
        raise InputError(f"the raw drop directory {raw} does not exist (Variable recsys_raw_dir / $RECSYS_RAW_DIR)")

    from recsys_core.publish.parquet_table import published_ds
    from recsys_core.publish.publish import check_not_expired

    wh = Warehouse(warehouse)
    table_dir = wh.recommendations(ds).rsplit("/", 1)[0]
    check_not_expired(published_ds(table_dir), ds, checked["keep"])
    return checked
