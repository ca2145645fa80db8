"""Features on a hand-written snapshot, with real Spark (local mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_core.data.vocab import ids_hash
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse
from recsys_core.spark.features import run_features
from recsys_core.spark.ingest import run_ingest

DS = "2018-09-30"

# A MovieLens-1M-style genre name (Children's) must work like the latest release's.
MOVIES = """movieId,title,genres
10,Alpha (1995),Comedy|Children's
20,"Beta, The (2001)",Drama
30,Gamma (1999-2003),Drama|Comedy
40,Delta,(no genres listed)
50,Epsilon (1980),Horror
"""

# film 50 has a single rating; user 3 rated only film 50.
RATINGS = """userId,movieId,rating,timestamp
1,30,4.0,300
1,10,3.5,100
1,20,5.0,200
2,10,2.0,100
2,40,4.5,150
3,50,1.0,100
4,20,3.0,100
4,30,3.0,120
"""

GENOME_TAGS = "tagId,tag\n2,second\n1,first\n3,third\n"
# film 10 complete, film 20 missing tag 3 (incomplete -> null), others none
GENOME = """movieId,tagId,relevance
10,3,0.3
10,1,0.1
10,2,0.2
20,1,0.5
20,2,0.6
"""


@pytest.fixture
def warehouse(spark, drop_factory, tmp_path) -> Warehouse:
    raw = drop_factory(
        {"movies.csv": MOVIES, "ratings.csv": RATINGS, "genome-tags.csv": GENOME_TAGS, "genome-scores.csv": GENOME}
    )
    wh = Warehouse(str(tmp_path / "wh"))
    run_ingest(spark, str(raw), wh, DS)
    return wh


def read(wh: Warehouse, table: str) -> list[dict]:
    rows = pq.read_table(f"{wh.features(DS)}/{table}").to_pylist()
    return sorted(rows, key=lambda r: r["film_idx"] if table == "films" else r["user_idx"])


def test_film_vocabulary_content_and_manifest(spark, warehouse):
    manifest = run_features(spark, warehouse, DS, min_film_ratings=1)
    films = read(warehouse, "films")
    assert [f["film_idx"] for f in films] == [0, 1, 2, 3, 4]
    assert [f["movie_id"] for f in films] == [10, 20, 30, 40, 50]
    assert [f["year"] for f in films] == [1995, 2001, 1999, None, 1980]
    assert manifest["genres"] == ["Children's", "Comedy", "Drama", "Horror"]
    assert [list(f["genres"]) for f in films] == [
        [1, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1],
    ]  # fmt: skip
    assert list(films[0]["genome"]) == pytest.approx([0.1, 0.2, 0.3])  # ordered by tagId
    assert films[1]["genome"] is None  # incomplete genome is not half-filled
    assert films[2]["genome"] is None
    assert [f["n_ratings"] for f in films] == [2, 2, 2, 1, 1]
    assert films[0]["mean_rating"] == pytest.approx(2.75)
    assert manifest["counts"] == {
        "films": 5, "users": 4, "users_without_vocabulary_ratings": 0, "ratings": 8,
        "films_with_genome": 1, "films_with_incomplete_genome": 1,
    }  # fmt: skip
    assert manifest["genome_tag_ids"] == [1, 2, 3]
    assert manifest["hashes"]["films"] == ids_hash([10, 20, 30, 40, 50])
    assert manifest["hashes"]["users"] == ids_hash([1, 2, 3, 4])
    on_disk = json.loads(Path(warehouse.features(DS), "manifest.json").read_text())
    assert on_disk == manifest


def test_user_lists_are_aligned_sorted_and_ready_for_csr(spark, warehouse):
    run_features(spark, warehouse, DS)
    users = read(warehouse, "users")
    assert [u["user_id"] for u in users] == [1, 2, 3, 4]
    assert [u["user_idx"] for u in users] == [0, 1, 2, 3]
    u1 = users[0]
    assert list(u1["film_idx"]) == [0, 1, 2]
    assert list(u1["rating"]) == [3.5, 5.0, 4.0]
    assert list(u1["timestamp"]) == [100, 200, 300]
    # CSR straight from the arrow lists: offsets are indptr, values are indices
    lists = pq.read_table(f"{warehouse.features(DS)}/users").sort_by("user_idx").column("film_idx").combine_chunks()
    assert lists.type.value_type == pa.int32()
    assert lists.offsets.to_numpy().tolist() == [0, 3, 5, 6, 8]
    assert lists.values.to_numpy().tolist() == [0, 1, 2, 0, 3, 4, 1, 2]


def test_min_film_ratings_shrinks_vocabulary_and_keeps_users_with_empty_lists(spark, warehouse):
    manifest = run_features(spark, warehouse, DS, min_film_ratings=2)
    films = read(warehouse, "films")
    assert [f["movie_id"] for f in films] == [10, 20, 30]
    users = {u["user_id"]: u for u in read(warehouse, "users")}
    assert set(users) == {1, 2, 3, 4}
    assert list(users[3]["film_idx"]) == [] and list(users[3]["rating"]) == []
    assert list(users[2]["film_idx"]) == [0]  # film 40 left the vocabulary
    assert manifest["counts"]["users_without_vocabulary_ratings"] == 1
    assert manifest["counts"]["ratings"] == 6


def test_rerun_gives_identical_features(spark, warehouse):
    first = run_features(spark, warehouse, DS)
    films, users = read(warehouse, "films"), read(warehouse, "users")
    second = run_features(spark, warehouse, DS)
    assert first == second
    assert str(read(warehouse, "films")) == str(films) and str(read(warehouse, "users")) == str(users)


def test_missing_snapshot_and_bad_parameter_are_clear(spark, tmp_path, warehouse):
    with pytest.raises(InputError, match="no snapshot for ds=2018-10-01"):
        run_features(spark, warehouse, "2018-10-01")
    with pytest.raises(ConfigError, match="--min-film-ratings"):
        run_features(spark, warehouse, DS, min_film_ratings=0)
