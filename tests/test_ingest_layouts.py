"""Every GroupLens layout reads as it ships and gives the same snapshot rows as the CSV layout."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys_core.data import layouts as L
from recsys_core.data.generator import generate
from recsys_core.data.layouts_writer import representable_in_100k, write_100k, write_dat
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse
from recsys_core.spark.ingest import run_ingest

from .conftest import ROOT, VENV_BIN

DS = "2018-09-30"
ACCENTED = {  # titles that need the encoding right (every one is Latin-1)
    0: "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    1: "Léon: The Professional (a.k.a. Léon) (1994)",
    2: "Misérables, Les (1995)",
}


def snapshot(wh: Path, table: str) -> list[dict]:
    rows = pq.read_table(f"{Warehouse(str(wh)).snapshot(DS)}/{table}").to_pylist()
    return sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))


def ingest(spark, raw: Path, wh: Path, **kw):
    return run_ingest(spark, str(raw), Warehouse(str(wh)), DS, max_reject_share=0.0, **kw)


# --- detection (no Spark) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "layout"),
    [
        (["ratings.csv", "movies.csv", "tags.csv", "links.csv"], "csv"),
        (["movies.csv"], "csv"),  # ingest then names the missing ratings.csv
        (["ratings.dat", "movies.dat", "users.dat"], "ml-1m"),
        (["ratings.dat", "movies.dat", "tags.dat"], "ml-10m"),
        (["ratings.dat", "movies.dat"], "ml-10m"),
        (["u.data", "u.item"], "ml-100k"),
    ],
)
def test_layout_is_detected_from_the_files_present(files, layout):
    assert L.detect_layout(files).name == layout


def test_mixed_or_unknown_drops_are_refused_clearly():
    with pytest.raises(InputError, match=r"mixes the files of several layouts: csv \(ratings.csv\), ml-1m"):
        L.detect_layout(["ratings.csv", "ratings.dat", "movies.dat", "users.dat"])
    with pytest.raises(InputError, match="no MovieLens files in the drop: expected ratings.csv"):
        L.detect_layout([])
    assert L.detect_layout(["ratings.csv", "ratings.dat"], "ml-10m").name == "ml-10m"
    with pytest.raises(ConfigError, match="--layout must be auto or one of"):
        L.detect_layout(["ratings.csv"], "ml-20m")


def test_encodings_per_file_and_for_the_drop():
    assert L.encoding_map(L.parse_encodings(None, L.ML_1M), L.ML_1M) == {"ratings.dat": "latin-1", "movies.dat": "latin-1"}
    chosen = L.parse_encodings(["movies.csv=Latin1", "cp1252"], L.CSV)
    assert chosen["movies.csv"] == "latin-1" and chosen["tags.csv"] == "cp1252"
    assert L.parse_encodings(["ISO-8859-1", "ratings.csv=UTF8"], L.CSV)["ratings.csv"] == "utf-8"


# --- each layout as it ships (hand-written lines in the release's own format) ----------


def test_100k_as_it_ships(spark, tmp_path):
    raw = tmp_path / "ml-100k"
    raw.mkdir()
    (raw / "u.data").write_bytes(b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    flags = lambda *on: "|".join("1" if g in on else "0" for g in L.ML100K_GENRES)
    items = [
        f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{flags('Comedy')}",
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{flags('Crime', 'Film-Noir', 'Mystery', 'Thriller')}",
        f"377|Heavyweights (1994)|01-Jan-1994||http://x|{flags('Children' + chr(39) + 's', 'Comedy')}",
        f"267|unknown||||{flags('unknown')}",
        f"1300|'Til There Was You (1997)|01-Jan-1997||http://x|{flags('Drama', 'Romance')}",
        f"1536|Aiqing wansui (1994)|22-Jul-1996||http://x|{flags('Drama')}",
        f"1600|Guantanamera (1994)|16-May-1997||http://x|{flags('Comedy')}",
        f"1680|Sliding Doors (1998)|01-Jan-1998||http://x|{flags('Drama', 'Romance')}",
        f"1682|Scream of Stone (Schrei aus Stein) (1991)|08-Mar-1996||http://x|{flags('Drama')}",
        f"1201|Marlene Dietrich: Shadow and Light (1996) |02-Apr-1996||http://x|{flags('Documentary')}",
        f"1650|Butcher's Wife, The (1991)|01-Jan-1991||http://x|{flags('Comedy', 'Romance')}",
        f"1368|Mina Tannenbaum (1994)|01-Jan-1994||http://x|{flags('Drama')}",
        f"1500|Santa with Muscles (1996)|08-Nov-1996||http://x|{flags('Comedy')}",
        f"1633|Á köldum klaka (Cold Fever) (1994)|08-Mar-1997||http://x|{flags('Comedy', 'Drama')}",
    ]
    (raw / "u.item").write_bytes("\n".join(items).encode("latin-1") + b"\n")
    summary = ingest(spark, raw, tmp_path / "wh")

    films = {r["movieId"]: r for r in snapshot(tmp_path / "wh", "movies")}
    assert films[1633]["title"] == "Á köldum klaka (Cold Fever) (1994)"
    assert films[377]["genres"] == "Children|Comedy"
    assert films[302]["genres"] == "Crime|Film-Noir|Mystery|Thriller"
    assert films[267] == {"movieId": 267, "title": "unknown", "genres": "(no genres listed)"}
    assert films[1201]["title"] == "Marlene Dietrich: Shadow and Light (1996)"
    assert [(r["userId"], r["movieId"], r["rating"]) for r in snapshot(tmp_path / "wh", "ratings")] == [
        (186, 302, 3.0), (196, 242, 3.0), (22, 377, 1.0)]  # fmt: skip
    assert summary.layout == "ml-100k"
    assert (summary.files["ratings.csv"].file, summary.files["movies.csv"].file) == ("u.data", "u.item")
    assert summary.files["movies.csv"].encoding == "latin-1"


def test_1m_and_10m_as_they_ship(spark, tmp_path):
    one = tmp_path / "ml-1m"
    one.mkdir()
    (one / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "29::City of Lost Children, The (1995)::Adventure|Sci-Fi\n"
        "73::Misérables, Les (1995)::Drama|Musical\n"
        '3106::Come Back "Home" (1998)::Drama\n'.encode("latin-1")
    )
    (one / "ratings.dat").write_bytes(b"1::1::5::978300760\n1::73::3::978302109\n2::3106::4::978298413\n")
    (one / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n")
    summary = ingest(spark, one, tmp_path / "wh1")
    films = {r["movieId"]: r for r in snapshot(tmp_path / "wh1", "movies")}
    assert films[73]["title"] == "Misérables, Les (1995)" and films[1]["genres"] == "Animation|Children|Comedy"
    assert films[3106]["title"] == 'Come Back "Home" (1998)'  # no quoting in .dat: quotes are text
    assert summary.layout == "ml-1m" and summary.files["ratings.csv"].rows_read == 3

    ten = tmp_path / "ml-10m"
    ten.mkdir()
    (ten / "movies.dat").write_text("1::Toy Story (1995)::Adventure|Animation|Children|Comedy|Fantasy\n"
                                    "5::Father of the Bride Part II (1995)::Comedy\n", encoding="utf-8")  # fmt: skip
    (ten / "ratings.dat").write_text("1::1::5::838985046\n1::5::3.5::838983525\n", encoding="utf-8")
    (ten / "tags.dat").write_text("15::1::excellent!::1215184630\n20::5::steve martin::1188263867\n", encoding="utf-8")
    summary = ingest(spark, ten, tmp_path / "wh10")
    assert summary.layout == "ml-10m" and summary.files["tags.csv"].file == "tags.dat"
    assert [r["tag"] for r in snapshot(tmp_path / "wh10", "tags")] == ["excellent!", "steve martin"]
    assert [r["rating"] for r in snapshot(tmp_path / "wh10", "ratings")] == [5.0, 3.5]


def test_dat_and_100k_files_get_the_same_structural_checks(spark, tmp_path):
    raw = tmp_path / "bad-1m"
    raw.mkdir()
    (raw / "movies.dat").write_bytes("1::Toy Story (1995)::Animation\n2::Jumanji (1995)\n3::A::B::C\n".encode("latin-1"))
    (raw / "ratings.dat").write_bytes(b"1::1::5::978300760\n1::1::5\n1::1::4::5::978300760\n")
    (raw / "users.dat").write_bytes(b"1::F::1::10::48067\n")
    summary = run_ingest(spark, str(raw), Warehouse(str(tmp_path / "wh")), DS, max_reject_share=1.0)
    assert summary.files["movies.csv"].rejected_by_reason == {"wrong_field_count": 2}
    assert summary.files["ratings.csv"].first_bad_line == {"wrong_field_count": 2}

    k100 = tmp_path / "bad-100k"
    k100.mkdir()
    ok = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    (k100 / "u.item").write_text(f"1|Toy Story (1995)|||x|{ok}\n2|Bad flags (1995)|||x|{ok.replace('1', '2')}\n")
    (k100 / "u.data").write_text("1\t1\t5\t881250949\n")
    summary = run_ingest(spark, str(k100), Warehouse(str(tmp_path / "wh2")), DS, max_reject_share=1.0)
    assert summary.files["movies.csv"].rejected_by_reason == {"unparsable:genres": 1}


# --- the same data in every layout -> the same snapshot rows ---------------------------


@pytest.fixture(scope="module")
def csv_drop(tmp_path_factory) -> Path:
    """A generated drop with a few accented titles (so the encodings matter)."""
    raw = tmp_path_factory.mktemp("layouts") / "csv"
    generate(raw, scale=0.0005, seed=13, genome_tags=8)
    with (raw / "movies.csv").open(encoding="utf-8", newline="") as f:
        movies = list(csv.DictReader(f))
    for i, title in ACCENTED.items():
        movies[i]["title"] = title
    with (raw / "movies.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, ["movieId", "title", "genres"], lineterminator="\n")
        w.writeheader()
        w.writerows(movies)
    return raw


@pytest.fixture(scope="module")
def csv_snapshot(spark, csv_drop, tmp_path_factory) -> dict[str, list[dict]]:
    wh = tmp_path_factory.mktemp("csv-wh")
    ingest(spark, csv_drop, wh)
    return {t: snapshot(wh, t) for t in ("ratings", "movies", "tags")}


@pytest.mark.parametrize("layout", ["ml-1m", "ml-10m", "ml-100k"])
def test_every_layout_gives_the_csv_layouts_snapshot_rows(spark, csv_drop, csv_snapshot, tmp_path, layout):
    raw = tmp_path / layout
    if layout == "ml-100k":
        write_100k(csv_drop, raw)
    else:
        write_dat(csv_drop, raw, layout.removeprefix("ml-"))
    summary = ingest(spark, raw, tmp_path / "wh")
    assert summary.layout == layout
    assert snapshot(tmp_path / "wh", "ratings") == csv_snapshot["ratings"]
    movies = csv_snapshot["movies"]
    if layout == "ml-100k":  # u.item's flags have no IMAX
        movies = [{**m, "genres": representable_in_100k(m["genres"])} for m in movies]
    assert snapshot(tmp_path / "wh", "movies") == movies
    titles = {m["title"] for m in snapshot(tmp_path / "wh", "movies")}
    assert set(ACCENTED.values()) <= titles
    if layout == "ml-10m":
        assert snapshot(tmp_path / "wh", "tags") == csv_snapshot["tags"] and csv_snapshot["tags"]
    if layout != "ml-10m":
        assert (raw / ("u.item" if layout == "ml-100k" else "movies.dat")).read_bytes().count(b"\xe9") >= 3  # Latin-1


# --- the job as an operator runs it ----------------------------------------------------


def submit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(VENV_BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           "jobs/ingest.py", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def ingest_job():
    """jobs/ingest.py's ``main`` in this process (its session is the tests' session)."""
    spec = importlib.util.spec_from_file_location("ingest_job", ROOT / "jobs" / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_logging():
    """run_main points the root logger at this test's captured stderr: put it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_job_reads_a_1m_drop_and_takes_encodings_per_file(spark, csv_drop, tmp_path, capsys, restore_logging):
    dat = write_dat(csv_drop, tmp_path / "ml-1m", "1m")
    job = ingest_job()
    assert job.run_main(job.main, ["--raw", str(dat), "--warehouse", str(tmp_path / "wh"), "--ds", DS]) == 0
    out = capsys.readouterr().out
    assert "layout ml-1m" in out and "(latin-1)" in out
    manifest = json.loads((tmp_path / "wh" / "snapshot" / f"ds={DS}" / "manifest.json").read_text())
    assert manifest["layout"] == "ml-1m" and manifest["files"]["movies.csv"]["encoding"] == "latin-1"

    latin1 = latin1_csv_drop(csv_drop, tmp_path / "csv-latin1")
    args = ["--raw", str(latin1), "--warehouse", str(tmp_path / "wh2"), "--ds", DS]
    assert job.run_main(job.main, [*args, "--encoding", "movies.csv=latin-1"]) == 0
    assert job.run_main(job.main, [*args, "--encoding", "utf-16"]) == 2
    assert "ERROR: --encoding 'utf-16' is not supported" in capsys.readouterr().err


def latin1_csv_drop(csv_drop: Path, out: Path) -> Path:
    """The generated drop with movies.csv re-saved in Latin-1 (as users do)."""
    out.mkdir()
    (out / "ratings.csv").write_bytes((csv_drop / "ratings.csv").read_bytes())
    (out / "movies.csv").write_bytes((csv_drop / "movies.csv").read_text(encoding="utf-8").encode("latin-1"))
    return out


def test_spark_submit_of_a_latin1_csv_exits_2_with_one_error_line(csv_drop, tmp_path):
    bad = latin1_csv_drop(csv_drop, tmp_path / "csv-latin1")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(VENV_BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           "jobs/ingest.py", "--raw", str(bad), "--warehouse", str(tmp_path / "wh"), "--ds", DS]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stdout[-3000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("ERROR: movies.csv is not valid UTF-8")
    assert "line 2 is the first bad line" in errors[0] and "--encoding latin-1" in errors[0]
    assert not (tmp_path / "wh" / "snapshot").exists()
