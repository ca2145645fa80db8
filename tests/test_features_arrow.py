"""bench/features_arrow.py (the features partition without Spark, for the GPU benchmark
machine) writes what the Spark jobs write: real ingest + features and the builder on the
same drops, compared through ``load_features`` (arrays, ids, manifest and its hashes)
and the parquet tables themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.features_arrow import build_features
from recsys_core.data.features import load_features
from recsys_core.data.generator import generate
from recsys_core.errors import InputError
from recsys_core.paths import Warehouse
from tests.test_features import GENOME, GENOME_TAGS

DS = "2018-09-30"
AFTER_DS = 1538352000  # 2018-10-01T00:00:00Z: the first second after ds

# Quoted titles (a comma, doubled quotes), year ranges with a hyphen and an en dash, a year
# that is not at the end, spaces around fields, no genres, a genre only a dropped film has.
MOVIES = """movieId,title,genres
10,Alpha (1995),Comedy|Children's
20,"Beta, The (2001)",Drama
30,Gamma (1999-2003),Drama|Comedy
40,Delta,(no genres listed)
50,Epsilon (1980),Horror
60,"Say ""Hi"" (2004)  ", Drama|Western
70,Zeta (1990\u20131994),Comedy
80,Eta (1970) Redux,Drama
90,Theta (2010),Musical
"""

# A re-rating (the later one wins), two on the same second (the higher wins), a rating
# after ds (dropped) and its user's only rating (the user is not in the snapshot), film 90
# rated only after ds (not in the vocabulary), rows out of order.
RATINGS = f"""userId,movieId,rating,timestamp
1,30,4.0,300
1,10,3.5,100
1,20,5.0,200
2,10,2.0,100
2,40,4.5,150
3,50,1.0,100
4,20,3.0,100
4,30,3.0,120
4,20,4.5,130
5,60,2.5,500
5,60,3.5,500
5,70,4.0,510
5,80,0.5,520
6,60,4.0,600
7,90,5.0,{AFTER_DS}
2,90,1.5,{AFTER_DS}
"""


def spark_features(spark, raw: Path, root: Path, min_film_ratings: int = 1) -> str:
    from recsys_core.spark.features import run_features
    from recsys_core.spark.ingest import run_ingest

    wh = Warehouse(str(root))
    run_ingest(spark, str(raw), wh, DS)
    run_features(spark, wh, DS, min_film_ratings)
    return wh.features(DS)


def arrow_features(raw: Path, root: Path, min_film_ratings: int = 1) -> str:
    wh = Warehouse(str(root))
    build_features(raw, wh, DS, min_film_ratings)
    return wh.features(DS)


def column_types(table: pa.Table) -> list[tuple[str, str]]:
    """(name, type) per column, a list's value type without its field's name."""
    out = []
    for f in table.schema:
        kind = f.type
        out.append((f.name, f"list<{kind.value_type}>" if pa.types.is_list(kind) else str(kind)))
    return out


def assert_same_features(spark_dir: str, arrow_dir: str) -> None:
    a, b = load_features(spark_dir), load_features(arrow_dir)
    assert a.manifest == b.manifest
    assert json.loads(Path(spark_dir, "manifest.json").read_text()) == json.loads(
        Path(arrow_dir, "manifest.json").read_text()
    )
    np.testing.assert_array_equal(a.users.user_ids, b.users.user_ids)
    for name in ("indptr", "indices", "ratings", "timestamps"):
        x, y = getattr(a.users.csr, name), getattr(b.users.csr, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.users.csr.n_films == b.users.csr.n_films
    for name in ("movie_ids", "genome", "has_genome", "genres", "numeric"):
        np.testing.assert_array_equal(getattr(a.films, name), getattr(b.films, name), err_msg=name)
    for table, key in (("films", "film_idx"), ("users", "user_idx")):
        x = pq.read_table(f"{spark_dir}/{table}").sort_by(key)
        y = pq.read_table(f"{arrow_dir}/{table}").sort_by(key)
        assert column_types(x) == column_types(y), table
        assert x.to_pylist() == y.to_pylist(), table


@pytest.mark.slow
def test_generated_drop_gives_the_features_of_the_spark_jobs(spark, tmp_path):
    raw = tmp_path / "raw"
    generate(raw, scale=0.002, seed=3)
    spark_dir = spark_features(spark, raw, tmp_path / "spark")
    arrow_dir = arrow_features(raw, tmp_path / "arrow")
    assert_same_features(spark_dir, arrow_dir)
    manifest = load_features(arrow_dir).manifest
    assert manifest["counts"]["films_with_genome"] > 0 and manifest["counts"]["ratings"] > 10_000


# the genome of test_features (one complete film, one incomplete); a header alone (no genome)
HEADER_ONLY = "movieId,tagId,relevance\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("min_film_ratings", "genome"), [(1, GENOME), (2, GENOME), (1, HEADER_ONLY)]
)
def test_hand_written_edge_cases_give_the_features_of_the_spark_jobs(spark, drop_factory, tmp_path,
                                                                     min_film_ratings, genome):  # fmt: skip
    files = {"movies.csv": MOVIES, "ratings.csv": RATINGS, "genome-tags.csv": GENOME_TAGS}
    raw = drop_factory({**files, "genome-scores.csv": genome})
    spark_dir = spark_features(spark, raw, tmp_path / "spark", min_film_ratings)
    arrow_dir = arrow_features(raw, tmp_path / "arrow", min_film_ratings)
    assert_same_features(spark_dir, arrow_dir)
    films = pq.read_table(f"{arrow_dir}/films").to_pylist()
    if min_film_ratings == 1:  # what the cases are there for
        assert [f["year"] for f in films] == [1995, 2001, 1999, None, 1980, 2004, 1990, None]
        assert films[5]["title"] == 'Say "Hi" (2004)'
    users = {u["user_id"]: u for u in pq.read_table(f"{arrow_dir}/users").to_pylist()}
    assert 7 not in users
    assert users[5]["rating"][0] == 3.5  # of the two ratings on the same second
    assert dict(zip(users[4]["film_idx"], users[4]["rating"], strict=True))[1] == 4.5


def test_drop_with_a_row_ingest_would_reject_is_refused(drop_factory, tmp_path):
    bad = RATINGS.replace("1,10,3.5,100", "1,10,7.0,100")
    raw = drop_factory({"movies.csv": MOVIES, "ratings.csv": bad})
    with pytest.raises(
        InputError, match=r"ratings.csv: 1 row\(s\) ingest would reject \(rating_out_of_range"
    ):
        arrow_features(raw, tmp_path / "arrow")
    unknown = RATINGS.replace("1,10,3.5,100", "1,11,3.5,100")
    with pytest.raises(InputError, match="unknown_movie"):
        arrow_features(
            drop_factory({"movies.csv": MOVIES, "ratings.csv": unknown}), tmp_path / "arrow"
        )
    stray = MOVIES.replace("50,Epsilon (1980)", '50,Eps"ilon (1980)')
    with pytest.raises(InputError, match="has a quote ingest would reject"):
        arrow_features(
            drop_factory({"movies.csv": stray, "ratings.csv": RATINGS}), tmp_path / "arrow"
        )
    assert not Path(tmp_path / "arrow" / "features").exists()
