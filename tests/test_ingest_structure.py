"""Input bytes: every record that is not one well-formed row of the header's width is read
correctly or quarantined as one record with a reason; encodings; line numbers. Real Spark."""

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
END = as_of_cutoff(DS)
MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '2,"Good, the Bad and the Ugly, The (1966)",Action|Western\n'
    "3,Heat (1995),Action|Crime|Thriller\n"
)
RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.5,964981247\n2,1,0.5,964982224\n2,3,5.0,964983000\n"
LATIN1_MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama|Fantasy\n'
    "3,Léon: The Professional (1994),Action|Crime|Drama\n"
).encode("latin-1")


def drop(base: Path, files: dict[str, str | bytes]) -> Path:
    """A drop with each file written byte for byte (text as UTF-8)."""
    base.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (base / name).write_bytes(body.encode("utf-8") if isinstance(body, str) else body)
    return base


def ingest(spark, raw: Path, wh: Path, share: float = 1.0, **kw):
    return run_ingest(spark, str(raw), Warehouse(str(wh)), DS, max_reject_share=share, **kw)


def rows(path: str | Path) -> list[dict]:
    return pq.read_table(str(path)).to_pylist()


def quarantine(wh: Path) -> list[dict]:
    return sorted(rows(Warehouse(str(wh)).quarantine(DS)), key=lambda r: (r["file"], r["line"]))


def snapshot(wh: Path, table: str) -> list[dict]:
    return rows(f"{Warehouse(str(wh)).snapshot(DS)}/{table}")


def no_replacement_character_anywhere(wh: Path) -> None:
    snap = Path(Warehouse(str(wh)).snapshot(DS))
    for table in [p for p in snap.iterdir() if p.is_dir()]:
        for row in rows(table):
            for value in row.values():
                assert not (isinstance(value, str) and "\ufffd" in value), (table.name, row)


def test_unquoted_comma_in_a_title_quarantines_the_row_whole(spark, tmp_path):
    """Reported: ``4886,Monsters, Inc. (2001),…`` was stored as title 'Monsters', genres 'Inc. (2001)'."""
    movies = MOVIES + "4886,Monsters, Inc. (2001),Adventure|Animation|Children|Comedy|Fantasy\n"
    movies += '4887,"Monsters, Inc. (2001)",Adventure|Animation\n'  # quoted: read whole
    ratings = RATINGS + "3,4886,4.0,964982703\n3,4887,4.0,964982703\n"
    summary = ingest(spark, drop(tmp_path / "raw", {"movies.csv": movies, "ratings.csv": ratings}), tmp_path / "wh")

    films = {r["movieId"]: r for r in snapshot(tmp_path / "wh", "movies")}
    assert 4886 not in films
    assert films[4887]["title"] == "Monsters, Inc. (2001)" and films[4887]["genres"] == "Adventure|Animation"
    assert all("Inc. (2001)" not in r["genres"] for r in films.values())
    bad = [r for r in quarantine(tmp_path / "wh") if r["file"] == "movies.csv"]
    assert bad == [{
        "file": "movies.csv", "line": 5, "reason": "wrong_field_count", "record": None,
        "raw": "4886,Monsters, Inc. (2001),Adventure|Animation|Children|Comedy|Fantasy",
    }]  # fmt: skip
    assert summary.files["movies.csv"].rejected_by_reason == {"wrong_field_count": 1}
    # the rating of the quarantined film goes too (unknown film), the valid ones stay
    assert {(r["userId"], r["movieId"]) for r in snapshot(tmp_path / "wh", "ratings")} == {
        (1, 1), (1, 2), (2, 1), (2, 3), (3, 4887)}  # fmt: skip


def test_decimal_comma_in_a_rating_is_quarantined_not_read_as_1970(spark, tmp_path):
    """Reported: ``1,2,3,5,964982800`` was stored as rating 3.0 at timestamp 5 (1970-01-01)."""
    ratings = RATINGS + "1,3,3,5,964982800\n"
    summary = ingest(spark, drop(tmp_path / "raw", {"movies.csv": MOVIES, "ratings.csv": ratings}), tmp_path / "wh")

    assert [(r["line"], r["reason"], r["raw"]) for r in quarantine(tmp_path / "wh")] == [
        (6, "wrong_field_count", "1,3,3,5,964982800")]  # fmt: skip
    kept = snapshot(tmp_path / "wh", "ratings")
    assert len(kept) == 4 and min(r["timestamp"] for r in kept) == 964981247
    assert not summary.first_rating.startswith("1970")
    assert summary.first_rating == "2000-07-30T18:20:47+00:00"


def test_latin1_file_fails_by_default_naming_file_line_and_hint(spark, tmp_path):
    """Reported: a Latin-1 movies.csv was stored with U+FFFD (``Cit� des enfants perdus``)."""
    raw = drop(tmp_path / "raw", {"movies.csv": LATIN1_MOVIES, "ratings.csv": RATINGS.replace("1,2,", "1,29,")})
    wh = tmp_path / "wh"
    with pytest.raises(InputError) as err:
        ingest(spark, raw, wh)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("movies.csv is not valid UTF-8")
    assert "line 3 is the first bad line" in message and "--encoding latin-1" in message
    assert not Path(Warehouse(str(wh)).snapshot(DS)).exists()  # nothing published
    bad = quarantine(wh)  # but the undecodable lines can be inspected, bytes intact
    assert [(r["line"], r["reason"]) for r in bad] == [(3, "invalid_utf8"), (4, "invalid_utf8")]
    assert bad[0]["raw"] == '29,"City of Lost Children, The (Cit\\xe9 des enfants perdus, La) (1995)",Adventure|Drama|Fantasy'
    assert bad[1]["raw"].encode().decode("unicode_escape").encode("latin-1") == LATIN1_MOVIES.splitlines()[3]


@pytest.mark.parametrize(("encoding", "ratings_encoding"), [
    ("latin-1", "latin-1"), (["latin1", "ratings.csv=utf-8"], "utf-8")])
def test_latin1_file_reads_correctly_with_encoding(spark, tmp_path, encoding, ratings_encoding):
    movies = LATIN1_MOVIES + "5,Café Society (2016),Comedy\n".encode()  # a UTF-8 line: read as UTF-8
    raw = drop(tmp_path / "raw", {"movies.csv": movies, "ratings.csv": RATINGS.replace("1,2,", "1,29,")})
    summary = ingest(spark, raw, tmp_path / "wh", encoding=encoding)
    titles = {r["movieId"]: r["title"] for r in snapshot(tmp_path / "wh", "movies")}
    assert titles[29] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    assert titles[3] == "Léon: The Professional (1994)"
    assert titles[5] == "Café Society (2016)"  # not "CafÃ© Society"
    assert summary.files["movies.csv"].encoding == "latin-1" and summary.files["ratings.csv"].encoding == ratings_encoding
    manifest = json.loads((Path(Warehouse(str(tmp_path / "wh")).snapshot(DS)) / "manifest.json").read_text())
    assert manifest["layout"] == "csv" and manifest["files"]["movies.csv"]["encoding"] == "latin-1"
    no_replacement_character_anywhere(tmp_path / "wh")


def test_explicit_utf8_makes_undecodable_lines_ordinary_rejects(spark, tmp_path):
    movies = MOVIES.encode() + b"5,Caf\xe9 Society (2016),Comedy\n"
    raw = drop(tmp_path / "raw", {"movies.csv": movies, "ratings.csv": RATINGS})
    with pytest.raises(InputError, match=r"movies.csv: 1 of 4 rows rejected \(25.00%; invalid_utf8=1\), the first at line 5"):
        ingest(spark, raw, tmp_path / "wh", share=0.1, encoding="utf-8")
    summary = ingest(spark, raw, tmp_path / "wh", share=0.3, encoding="utf-8")
    assert summary.files["movies.csv"].kept == 3
    assert [r["raw"] for r in quarantine(tmp_path / "wh")] == ["5,Caf\\xe9 Society (2016),Comedy"]


def test_cp1252_punctuation_decodes_with_cp1252_and_is_rejected_as_latin1(spark, tmp_path):
    movies = MOVIES.encode() + "5,\u201cSmart\u201d Quotes \u2013 Euro \u20ac (2001),Comedy\n".encode("cp1252")
    raw = drop(tmp_path / "raw", {"movies.csv": movies, "ratings.csv": RATINGS})
    ingest(spark, raw, tmp_path / "wh", encoding="cp1252")
    assert {r["movieId"]: r["title"] for r in snapshot(tmp_path / "wh", "movies")}[5] == (
        "\u201cSmart\u201d Quotes \u2013 Euro \u20ac (2001)")  # fmt: skip
    ingest(spark, raw, tmp_path / "wh2", encoding="latin-1")  # C1 controls: not text
    assert [r["reason"] for r in quarantine(tmp_path / "wh2")] == ["control_character"]


def test_every_structural_fault_is_one_record_with_a_reason(spark, tmp_path):
    lines = [
        b"movieId,title,genres",
        b"1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",  # 2 ok
        b"2,Short row",  # 3 fewer fields
        b"3,Extra (1995),Drama,oops",  # 4 more fields
        b'4,"Unclosed, title (1995),Drama',  # 5 unclosed quote (fields miscounted)
        b'5,Unclosed last (1995),"Drama',  # 6 unclosed quote in the last field (count looks right)
        b'6,"Stray" quote (1995),Drama',  # 7 text after a closing quote
        b'7,Inner "quote" (1995),Drama',  # 8 quote inside an unquoted field
        b"\xef\xbb\xbf8,After a BOM (1995),Drama",  # 9 concatenated file: BOM mid-file
        b"9,Nul\x00byte (1995),Drama",  # 10 control character
        "10,Already lost \ufffd (1995),Drama".encode(),  # 11 replacement character
        b"11,Bad \xff byte (1995),Drama",  # 12 invalid UTF-8 (rejected: explicit utf-8 below)
        b"",  # 13 blank: not a record
        b'12,"Fine, quoted ""really"" (1995)",Drama',  # 14 ok
        b"13,Caf\xc3\xa9 (1995),Drama",  # 15 ok, UTF-8
    ]
    raw = drop(tmp_path / "raw", {"movies.csv": b"\r\n".join(lines) + b"\r\n", "ratings.csv": RATINGS})
    summary = ingest(spark, raw, tmp_path / "wh", encoding="utf-8")

    bad = [r for r in quarantine(tmp_path / "wh") if r["file"] == "movies.csv"]
    assert [(r["line"], r["reason"]) for r in bad] == [
        (3, "wrong_field_count"), (4, "wrong_field_count"), (5, "unclosed_quote"), (6, "unclosed_quote"),
        (7, "stray_quote"), (8, "stray_quote"), (9, "stray_bom"), (10, "control_character"),
        (11, "replacement_character"), (12, "invalid_utf8"),
    ]  # fmt: skip
    films = {r["movieId"]: r["title"] for r in snapshot(tmp_path / "wh", "movies")}
    assert films == {1: "Toy Story (1995)", 12: 'Fine, quoted "really" (1995)', 13: "Café (1995)"}
    report = summary.files["movies.csv"]
    assert (report.rows_read, report.rejected, report.kept) == (13, 10, 3)
    raws = {r["line"]: r["raw"] for r in bad}
    assert raws[9] == "\ufeff8,After a BOM (1995),Drama" and raws[10] == "9,Nul\x00byte (1995),Drama"
    assert raws[12] == "11,Bad \\xff byte (1995),Drama"
    no_replacement_character_anywhere(tmp_path / "wh")


def test_faults_in_every_file_are_counted_per_file(spark, tmp_path):
    genome_tags = "tagId,tag\n1,atmospheric\n2,twist, ending\n"
    genome = "movieId,tagId,relevance\n1,1,0.5\n1,1,0,25\n"
    tags = 'userId,movieId,tag,timestamp\n1,1,pixar,964982703\n1,1,"unclosed,964982703\n'
    links = "movieId,imdbId,tmdbId\n1,0114709,862\n2,0060196\n"
    raw = drop(tmp_path / "raw", {"movies.csv": MOVIES, "ratings.csv": RATINGS + "1,3\n", "genome-tags.csv": genome_tags,
                                  "genome-scores.csv": genome, "tags.csv": tags, "links.csv": links})  # fmt: skip
    summary = ingest(spark, raw, tmp_path / "wh")
    assert {f: r.rejected_by_reason for f, r in summary.files.items() if r.rejected} == {
        "ratings.csv": {"wrong_field_count": 1}, "genome-tags.csv": {"wrong_field_count": 1},
        "genome-scores.csv": {"wrong_field_count": 1}, "tags.csv": {"unclosed_quote": 1},
        "links.csv": {"wrong_field_count": 1},
    }  # fmt: skip
    assert {r["file"]: r["line"] for r in quarantine(tmp_path / "wh")} == {
        "ratings.csv": 6, "genome-tags.csv": 3, "genome-scores.csv": 3, "tags.csv": 3, "links.csv": 3}  # fmt: skip


def test_line_numbers_and_no_lost_rows_across_file_splits(spark, tmp_path):
    """With 1 KB splits the file is read by many tasks: the header is skipped once, every
    line is read once, and quarantine line numbers are still the file's."""
    body = [f"{u},{1 + u % 3},{(u % 10 + 1) / 2},{964982703 + u}" for u in range(1, 400)]
    bad = {57: "57,1,4,5,964982703", 200: "200,1", 333: '333,1,"4.0,964982703'}
    for line, text in bad.items():
        body[line - 2] = text  # line 1 is the header
    raw = drop(tmp_path / "raw", {"movies.csv": MOVIES, "ratings.csv": "userId,movieId,rating,timestamp\n" + "\n".join(body) + "\n"})
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1024")
    try:
        summary = ingest(spark, raw, tmp_path / "wh")
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    got = {r["line"]: r["reason"] for r in quarantine(tmp_path / "wh")}
    assert got == {57: "wrong_field_count", 200: "wrong_field_count", 333: "unclosed_quote"}
    assert summary.files["ratings.csv"].rows_read == 399
    assert len(snapshot(tmp_path / "wh", "ratings")) == 396


def test_a_header_with_a_bom_and_quoted_names_is_read(spark, tmp_path):
    raw = drop(tmp_path / "raw", {"movies.csv": "\ufeff" + MOVIES.replace("title", '"title"'), "ratings.csv": RATINGS})
    summary = ingest(spark, raw, tmp_path / "wh")
    assert summary.files["movies.csv"].kept == 3


def test_an_undecodable_header_names_line_1_and_utf16_is_named(spark, tmp_path):
    raw = drop(tmp_path / "raw", {"movies.csv": b"movieId,t\xeetle,genres\n1,A (1990),Drama\n", "ratings.csv": RATINGS})
    with pytest.raises(InputError, match=r"movies.csv is not valid UTF-8 .*line 1 is the first bad line.*--encoding latin-1"):
        ingest(spark, raw, tmp_path / "wh")
    raw = drop(tmp_path / "raw16", {"movies.csv": MOVIES.encode("utf-16"), "ratings.csv": RATINGS})
    with pytest.raises(InputError, match="movies.csv is UTF-16 .*: save it as UTF-8"):
        ingest(spark, raw, tmp_path / "wh")


def test_unsupported_encoding_is_named(spark, tmp_path):
    raw = drop(tmp_path / "raw", {"movies.csv": MOVIES, "ratings.csv": RATINGS})
    with pytest.raises(ConfigError, match="--encoding 'utf-16' is not supported: use one of utf-8, latin-1, cp1252"):
        ingest(spark, raw, tmp_path / "wh", encoding="utf-16")
    with pytest.raises(ConfigError, match="u.item is not a file of the csv layout"):
        ingest(spark, raw, tmp_path / "wh", encoding="u.item=latin-1")
