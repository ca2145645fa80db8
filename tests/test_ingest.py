"""Ingest on hand-written drops, with real Spark (local mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys_core.dates import as_of_cutoff
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse
from recsys_core.spark.ingest import run_ingest

DS = "2018-09-30"
END = as_of_cutoff(DS)  # first second after ds

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"Good, the Bad and the Ugly, The (1966)",Action|Western
3,"Film With ""Quotes"" (2001)",Drama
4,No Year Film,(no genres listed)
"""

GOOD_RATINGS = f"""userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,4.5,964981247
2,1,0.5,964982224
2,3,5.0,{END - 1}
"""


def table(path: str) -> list[dict]:
    """All rows of a parquet table, sorted by its columns in schema order."""
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: tuple((v is None, v or 0) for v in r.values()))


def ingest(spark, raw: Path, wh: Path, ds: str = DS, share: float = 1.0):
    return run_ingest(spark, str(raw), Warehouse(str(wh)), ds, max_reject_share=share)


def test_quoted_titles_crlf_and_as_of_boundary(spark, drop_factory, tmp_path):
    ratings = GOOD_RATINGS + f"3,1,3.0,{END}\n"  # one second after the end of ds: excluded
    raw = drop_factory({"movies.csv": MOVIES, "ratings.csv": ratings}, newline="\r\n")
    summary = ingest(spark, raw, tmp_path / "wh")
    snap = Warehouse(str(tmp_path / "wh")).snapshot(DS)

    movies = {r["movieId"]: r for r in table(f"{snap}/movies")}
    assert movies[2]["title"] == "Good, the Bad and the Ugly, The (1966)"
    assert movies[3]["title"] == 'Film With "Quotes" (2001)'
    assert movies[1]["genres"] == "Adventure|Animation|Children|Comedy|Fantasy"  # no trailing \r
    assert movies[4]["genres"] == "(no genres listed)"

    rows = table(f"{snap}/ratings")
    assert {(r["userId"], r["movieId"]) for r in rows} == {(1, 1), (1, 2), (2, 1), (2, 3)}
    assert [r["timestamp"] for r in rows if r["userId"] == 2 and r["movieId"] == 3] == [END - 1]
    report = summary.files["ratings.csv"]
    assert (report.rows_read, report.kept, report.after_ds, report.rejected) == (5, 4, 1, 0)
    assert summary.users == 2 and summary.rated_films == 3
    assert json.loads((Path(snap) / "manifest.json").read_text())["users"] == 2


def test_every_reject_reason_is_quarantined_and_valid_rows_kept(spark, drop_factory, tmp_path):
    ratings = GOOD_RATINGS + "\n".join(
        [
            "x,1,4.0,964982703",  # unparsable userId
            "5,1,4.0,",  # missing timestamp
            "0,1,4.0,964982703",  # non-positive userId
            "5,-2,4.0,964982703",  # non-positive movieId
            "5,1,5.5,964982703",  # above 5.0
            "5,2,0.0,964982703",  # below 0.5
            "5,3,3.3,964982703",  # off the half-star grid
            "6,1,NaN,964982703",  # NaN
            "6,99,4.0,964982703",  # film missing from movies.csv
            "6,2,four,964982703",  # unparsable rating
        ]
    )
    genome_tags = "tagId,tag\n1,atmospheric\n2,twist ending\nzz,broken\n"
    genome = "movieId,tagId,relevance\n1,1,0.5\n1,2,0.25\n2,1,1.5\n2,2,-0.1\n3,7,0.4\n99,1,0.3\n3,1,NaN\n"
    tags = f"userId,movieId,tag,timestamp\n1,1,pixar,964982703\n1,77,ghost,964982703\n2,1,late,{END}\n"
    raw = drop_factory(
        {
            "movies.csv": MOVIES + "x,Broken (2000),Drama\n2,Duplicate id (1999),Drama\n",
            "ratings.csv": ratings,
            "genome-tags.csv": genome_tags,
            "genome-scores.csv": genome,
            "tags.csv": tags,
        }
    )
    summary = ingest(spark, raw, tmp_path / "wh")
    wh = Warehouse(str(tmp_path / "wh"))

    q = table(wh.quarantine(DS))
    reasons = sorted((r["file"], r["reason"]) for r in q)
    assert reasons == sorted(
        [
            ("ratings.csv", "unparsable:userId"),
            ("ratings.csv", "missing:timestamp"),
            ("ratings.csv", "non_positive_id:userId"),
            ("ratings.csv", "non_positive_id:movieId"),
            ("ratings.csv", "rating_out_of_range"),
            ("ratings.csv", "rating_out_of_range"),
            ("ratings.csv", "rating_off_half_star_grid"),
            ("ratings.csv", "rating_nan"),
            ("ratings.csv", "unknown_movie"),
            ("ratings.csv", "unparsable:rating"),
            ("movies.csv", "unparsable:movieId"),
            ("movies.csv", "duplicate:movieId"),
            ("genome-tags.csv", "unparsable:tagId"),
            ("genome-scores.csv", "relevance_out_of_range"),
            ("genome-scores.csv", "relevance_out_of_range"),
            ("genome-scores.csv", "unknown_tag"),
            ("genome-scores.csv", "unknown_movie"),
            ("genome-scores.csv", "relevance_nan"),
            ("tags.csv", "unknown_movie"),
        ]
    )
    raw_record = next(r["record"] for r in q if r["reason"] == "unparsable:rating")
    assert json.loads(raw_record) == {"userId": "6", "movieId": "2", "rating": "four", "timestamp": "964982703"}
    # the valid rows all survive
    snap = wh.snapshot(DS)
    assert len(table(f"{snap}/ratings")) == 4
    assert {r["movieId"]: r["title"] for r in table(f"{snap}/movies")}[2].startswith("Good, the Bad")
    assert sorted((r["movieId"], r["tagId"]) for r in table(f"{snap}/genome")) == [(1, 1), (1, 2)]
    assert [r["tag"] for r in table(f"{snap}/tags")] == ["pixar"]  # the late tag is after ds
    assert summary.files["ratings.csv"].rejected_by_reason["rating_out_of_range"] == 2
    assert summary.files["tags.csv"].after_ds == 1


def test_duplicate_pairs_keep_the_latest_rating(spark, drop_factory, tmp_path):
    ratings = "userId,movieId,rating,timestamp\n1,1,2.0,100\n1,1,4.0,300\n1,1,3.0,200\n2,1,1.0,50\n"
    summary = ingest(spark, drop_factory({"movies.csv": MOVIES, "ratings.csv": ratings}), tmp_path / "wh")
    rows = table(f"{Warehouse(str(tmp_path / 'wh')).snapshot(DS)}/ratings")
    assert [(r["userId"], r["rating"], r["timestamp"]) for r in rows] == [(1, 4.0, 300), (2, 1.0, 50)]
    assert summary.files["ratings.csv"].duplicates == 2


def test_re_rating_after_ds_does_not_replace_the_rating_of_ds(spark, drop_factory, tmp_path):
    ratings = f"userId,movieId,rating,timestamp\n1,1,2.0,{END - 10}\n1,1,5.0,{END + 10}\n"
    ingest(spark, drop_factory({"movies.csv": MOVIES, "ratings.csv": ratings}), tmp_path / "wh")
    rows = table(f"{Warehouse(str(tmp_path / 'wh')).snapshot(DS)}/ratings")
    assert [(r["rating"], r["timestamp"]) for r in rows] == [(2.0, END - 10)]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"movies.csv": MOVIES}, "required file ratings.csv is missing"),
        ({"ratings.csv": GOOD_RATINGS}, "required file movies.csv is missing"),
        ({"movies.csv": MOVIES, "ratings.csv": "userId,movieId,timestamp\n1,1,5\n"}, "ratings.csv: missing required column(s) rating"),
        ({"movies.csv": MOVIES, "ratings.csv": "userId,movieId,rating,timestamp\n"}, "ratings.csv has a header but no data rows"),
        ({"movies.csv": "movieId,title\n1,Toy Story (1995)\n", "ratings.csv": GOOD_RATINGS}, "movies.csv: missing required column(s) genres"),
        ({"movies.csv": MOVIES, "ratings.csv": GOOD_RATINGS, "genome-scores.csv": "movieId,tagId,relevance\n1,1,0.5\n"},
         "genome-tags.csv is missing"),
    ],
)
def test_unusable_drop_fails_with_a_clear_message(spark, drop_factory, tmp_path, files, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ingest(spark, drop_factory(files), tmp_path / "wh")
    assert not Path(Warehouse(str(tmp_path / "wh")).snapshot(DS)).exists()


def test_zero_byte_ratings_file_is_an_error(spark, drop_factory, tmp_path):
    raw = drop_factory({"movies.csv": MOVIES, "ratings.csv": ""})
    (raw / "ratings.csv").write_bytes(b"")
    with pytest.raises(InputError, match=r"ratings.csv is empty \(0 bytes"):
        ingest(spark, raw, tmp_path / "wh")


def test_reject_share_over_limit_fails_and_keeps_the_previous_snapshot(spark, drop_factory, tmp_path):
    wh = tmp_path / "wh"
    ingest(spark, drop_factory({"movies.csv": MOVIES, "ratings.csv": GOOD_RATINGS}), wh, share=0.01)
    snap = Warehouse(str(wh)).snapshot(DS)
    before = table(f"{snap}/ratings")

    bad = GOOD_RATINGS + "1,3,9.0,964982703\n"  # 1 of 5 rows rejected = 20%
    with pytest.raises(InputError, match=r"ratings.csv: 1 of 5 rows rejected \(20.00%; rating_out_of_range=1\)"):
        ingest(spark, drop_factory({"movies.csv": MOVIES, "ratings.csv": bad}), wh, share=0.10)
    assert table(f"{snap}/ratings") == before
    quarantined = table(Warehouse(str(wh)).quarantine(DS))
    assert [r["reason"] for r in quarantined] == ["rating_out_of_range"]  # inspectable
    # within the limit, the same drop goes through
    summary = ingest(spark, drop_factory({"movies.csv": MOVIES, "ratings.csv": bad}), wh, share=0.25)
    assert summary.files["ratings.csv"].kept == 4


def test_rerun_for_the_same_ds_gives_identical_rows(spark, drop_factory, tmp_path):
    raw = drop_factory({"movies.csv": MOVIES, "ratings.csv": GOOD_RATINGS + "1,1,3.0,964982800\n"})
    wh = tmp_path / "wh"
    ingest(spark, raw, wh)
    snap = Warehouse(str(wh)).snapshot(DS)
    first = {t: table(f"{snap}/{t}") for t in ("ratings", "movies")}
    ingest(spark, raw, wh)
    assert {t: table(f"{snap}/{t}") for t in ("ratings", "movies")} == first
    assert sorted(p.name for p in (wh / "snapshot").iterdir()) == [f"ds={DS}"]  # no staging left


def test_bad_parameters_are_named(spark, drop_factory, tmp_path):
    raw = drop_factory({"movies.csv": MOVIES, "ratings.csv": GOOD_RATINGS})
    with pytest.raises(ConfigError, match="--ds"):
        ingest(spark, raw, tmp_path / "wh", ds="2018-13-01")
    with pytest.raises(ConfigError, match="--max-reject-share"):
        ingest(spark, raw, tmp_path / "wh", share=1.5)
