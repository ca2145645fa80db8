"""The synthetic MovieLens-shaped generator: shape, format, determinism, learnable taste."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_core.data.generator import FULL_RATINGS, FULL_USERS, Shape, generate

FILES = ("ratings.csv", "movies.csv", "genome-scores.csv", "genome-tags.csv", "tags.csv", "links.csv")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Shape]:
    out = tmp_path_factory.mktemp("gen")
    return out, generate(out, scale=0.01, seed=7, genome_tags=24)


def digest(directory: Path) -> dict[str, str]:
    return {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in FILES}


def test_full_scale_shape_is_the_latest_release():
    shape = Shape.at_scale(1.0)
    assert (shape.users, shape.films, shape.ratings) == (283_228, 58_098, 27_753_444)
    assert (shape.genome_films, shape.genome_tags) == (13_176, 1_128)
    assert 1_000_000 < shape.tag_applications < 1_200_000


def test_counts_ids_and_ratings(small):
    out, shape = small
    r = pd.read_csv(out / "ratings.csv")
    movies = pd.read_csv(out / "movies.csv")
    assert list(r.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert len(r) == shape.ratings == round(FULL_RATINGS * 0.01)
    assert r.userId.nunique() == shape.users == round(FULL_USERS * 0.01)
    assert not r.duplicated(["userId", "movieId"]).any()
    assert r.groupby("userId").size().min() >= 1
    assert set(r.movieId) <= set(movies.movieId)
    assert movies.movieId.is_unique and movies.movieId.max() > 2 * len(movies)  # sparse ids
    assert set(r.rating.unique()) <= {x / 2 for x in range(1, 11)}
    assert 3.4 < r.rating.mean() < 3.65 and r.rating.mode().iloc[0] == 4.0
    assert r.timestamp.min() >= 789_652_009 and r.timestamp.max() <= 1_537_799_250
    assert (r.sort_values(["userId", "movieId"]).index == r.index).all()  # GroupLens order
    # heavy tails: a blockbuster far above the median film, a few very active users
    per_film = r.groupby("movieId").size()
    assert per_film.max() > 20 * per_film.median()
    per_user = r.groupby("userId").size()
    assert per_user.max() > 10 * per_user.median()


def test_genome_tags_links_and_csv_quoting(small):
    out, shape = small
    g = pd.read_csv(out / "genome-scores.csv")
    assert len(g) == shape.genome_films * shape.genome_tags
    assert g.relevance.between(0, 1).all() and 0.05 < g.relevance.mean() < 0.4
    assert len(pd.read_csv(out / "genome-tags.csv")) == 24
    assert len(pd.read_csv(out / "links.csv", dtype={"imdbId": str})) == shape.films
    tags = pd.read_csv(out / "tags.csv")
    assert 0.5 * shape.tag_applications < len(tags) < 1.5 * shape.tag_applications
    text = (out / "movies.csv").read_text(encoding="utf-8")
    assert text.startswith("movieId,title,genres\n")  # header unquoted, LF
    with (out / "movies.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert any("," in title for _, title, _ in rows)  # "…, The (1999)" style titles
    assert all(f'"{t}"' not in text for _, t, _ in rows if "," not in t and '"' not in t)  # quoted only when needed


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, small):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, scale=0.002, seed=3, genome_tags=8)
    generate(b, scale=0.002, seed=3, genome_tags=8)
    assert digest(a) == digest(b)
    generate(tmp_path / "c", scale=0.002, seed=4, genome_tags=8)
    assert digest(tmp_path / "c")["ratings.csv"] != digest(a)["ratings.csv"]


def test_taste_is_learnable_beyond_popularity(small):
    """An item-item ridge model (EASE) finds randomly held-out films far better than
    popularity, as on the real ml-latest-small (2.0x there): there is taste to learn."""
    out, _ = small
    r = pd.read_csv(out / "ratings.csv")
    hidden = np.random.default_rng(0).random(len(r)) < 0.2
    users = r.userId.to_numpy() - 1
    films = pd.factorize(r.movieId)[0]
    x = np.zeros((users.max() + 1, films.max() + 1), dtype=np.float32)
    x[users[~hidden], films[~hidden]] = 1.0
    gram = x.T @ x + 200.0 * np.eye(x.shape[1], dtype=np.float32)
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)

    def recall_at_20(scores: np.ndarray) -> float:
        scores = np.where(x > 0, -np.inf, scores)
        top20 = np.argpartition(-scores, 20, axis=1)[:, :20]
        hit = np.zeros_like(x, dtype=bool)
        hit[users[hidden], films[hidden]] = True
        n_hidden = hit.sum(axis=1)
        found = np.take_along_axis(hit, top20, axis=1).sum(axis=1)
        keep = n_hidden > 0
        return float(np.mean(found[keep] / np.minimum(20, n_hidden[keep])))

    popularity = recall_at_20(np.broadcast_to(x.sum(axis=0), x.shape))
    assert recall_at_20(x @ b) > 1.5 * popularity


def test_bad_scale_is_named():
    with pytest.raises(ValueError, match="--scale"):
        Shape.at_scale(0)
