"""The logical date ``ds`` of a run and the as-of cut it implies."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from recsys_core.errors import ConfigError


def parse_ds(ds: str) -> date:
    """Parse ``YYYY-MM-DD``; anything else is a ConfigError naming ``--ds``."""
    try:
        day = datetime.strptime(ds, "%Y-%m-%d").date()
    except (TypeError, ValueError):
        raise ConfigError(f"--ds must be a date as YYYY-MM-DD, got {ds!r}") from None
    if day.isoformat() != ds:  # strptime takes 2018-9-30: partitions and retention compare ds as text
        raise ConfigError(f"--ds must be a date as YYYY-MM-DD (zero-padded: {day.isoformat()}), got {ds!r}")
    return day


def as_of_cutoff(ds: str) -> int:
    """Epoch seconds of the end of ``ds`` (UTC): a run for ``ds`` keeps ``timestamp < cutoff``."""
    day = parse_ds(ds)
    end = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=UTC)
    return int(end.timestamp())
