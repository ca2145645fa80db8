"""Named points of a publish where a caller's hook runs.

The hook is the fault-injection seam of the tests (raise at a point, or block there to
look at what readers see) and costs nothing in production, where it is ``None``.
A hook is called as ``hook(point, info)``; ``info`` holds what is known at that point
(``path``, ``rows``, ``batches``).
"""

from __future__ import annotations

from collections.abc import Callable

Hook = Callable[[str, dict[str, object]], None]

POINTS = (
    "after_staging",  # the Parquet copy is written to its hidden sibling, not yet checked
    "before_swap",  # the copy passed its checks; the published partition is still the old one
    "after_swap",  # the Parquet partition is published; SQL not started
    "during_sql_load",  # after each batch streamed into the SQL load (inside its transaction)
    "before_sql_commit",  # the SQL replace is done but not committed: readers see the old rows
    "after_sql",  # the SQL transaction is committed; retention not started
)


def fire(hook: Hook | None, point: str, **info: object) -> None:
    if point not in POINTS:
        raise ValueError(f"unknown hook point {point!r}")
    if hook is not None:
        hook(point, info)
