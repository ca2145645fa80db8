"""Print the shape of a MovieLens-layout drop, to compare the generator with the real thing.

    .venv/bin/python bench/data_shape.py DIR
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pyarrow.csv as pacsv


def main(path: str) -> None:
    t = pacsv.read_csv(f"{path}/ratings.csv").to_pandas()
    films = t.groupby("movieId").size().sort_values(ascending=False)
    users = t.groupby("userId").size()
    movies = pacsv.read_csv(f"{path}/movies.csv").to_pandas()
    print(f"ratings {len(t):,}  users {t.userId.nunique():,}  rated films {films.size:,}"
          f"  films in movies.csv {len(movies):,}  max movieId {movies.movieId.max():,}")
    print(f"duplicate (user, film) pairs: {t.duplicated(['userId', 'movieId']).sum()}")
    print("film popularity: top", films.iloc[:5].tolist(),
          f" median {films.median():.0f}",
          f" share of movies.csv films with <5 ratings "
          f"{(films.reindex(movies.movieId, fill_value=0) < 5).mean():.1%}")
    print(f"user activity: min {users.min()} median {users.median():.0f} mean {users.mean():.1f}"
          f" p99 {users.quantile(0.99):.0f} max {users.max()}")
    r = t.rating
    print(f"rating mean {r.mean():.3f} mode {r.mode().iloc[0]}  shares",
          (r.value_counts(normalize=True).sort_index().round(3)).to_dict())
    to_date = lambda s: datetime.fromtimestamp(int(s), UTC).date()
    print(f"timestamps {to_date(t.timestamp.min())} .. {to_date(t.timestamp.max())}")
    g = movies.genres.str.split("|").explode().value_counts()
    print("genres:", g.head(8).to_dict())


if __name__ == "__main__":
    main(sys.argv[1])
