"""Print a few users' published recommendations with film titles (``recsys show``)."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys_core import fs_swap
from recsys_core.errors import InputError
from recsys_core.paths import Warehouse


def render_recommendations(warehouse: Warehouse, ds: str, users: list[int] | None = None,
                           n_users: int = 3, top: int = 5) -> str:  # fmt: skip
    """Text: the ``top`` films of the given users (default: the ``n_users`` smallest user ids)."""
    part = warehouse.recommendations(ds)
    if not fs_swap.is_dir(part):
        raise InputError(f"no published recommendations at {part}: run the DAG (make run) for ds={ds} first")
    fs, inner = fs_swap.filesystem(part)
    table = pads.dataset(inner, format="parquet", filesystem=fs).to_table(filter=pc.field("rank") <= top)
    chosen = users or sorted(set(table.column("user_id").to_pylist()))[:n_users]
    fs_films, films_inner = fs_swap.filesystem(f"{warehouse.features(ds)}/films")
    films = pq.read_table(films_inner, filesystem=fs_films, columns=["movie_id", "title"]).to_pandas()
    titles = dict(zip(films.movie_id, films.title))
    recs = table.to_pandas().sort_values(["user_id", "rank"])
    lines = [f"recommendations ds={ds} ({part}), top {top} of {len(chosen)} user(s):"]
    for user in chosen:
        mine = recs[recs.user_id == user]
        if mine.empty:
            lines.append(f"  user {user}: no recommendations")
            continue
        lines.append(f"  user {user} ({mine.source.iloc[0]}):")
        lines += [f"    {r.rank:>3}. {titles.get(r.movie_id, '?')}  [movie {r.movie_id}, score {r.score:.3f}]"
                  for r in mine.itertuples()]  # fmt: skip
    return "\n".join(lines)
