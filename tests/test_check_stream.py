"""The quality gate reads the staged rows a row group at a time: any layout, the same verdict.

Neither scorer promises where a user's rows sit (one file with a row group per batch of
users, or Spark's part files; a user may straddle two row groups). These tests put the
offending row in another row group or file than the user's other rows, and compare the
streaming checks with a reference: the former whole-table check (sort everything by
(user, rank), then look), kept here as the specification.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_core.data.csr import RatingsCSR
from recsys_core.data.vocab import ids_hash, names_hash
from recsys_core.model_version import version_string
from recsys_core.paths import Warehouse
from recsys_core.publish.contract import CHECK_FILE, SCHEMA
from recsys_core.scoring.check import EXAMPLES, GateFailed, Report, run_check
from recsys_core.scoring.row_checks import IdIndex, RowChecks
from recsys_core.scoring.score import SCORING_META

DS = "2018-09-30"
TOP_N = 5


# ---------------------------------------------------------------- the reference


def reference_failures(table: pa.Table, user_ids: np.ndarray, csr: RatingsCSR, movie_ids: np.ndarray,
                       top_n: int) -> dict[str, str]:  # fmt: skip
    """The gate's row contracts on the whole table at once (the gate before streaming)."""
    report = Report(DS)
    user = table.column("user_id").to_numpy()
    rank = table.column("rank").to_numpy().astype(np.int64)
    movie = table.column("movie_id").to_numpy()
    score = table.column("score").to_numpy()
    order = np.lexsort((rank, user))
    user, rank, movie, score = user[order], rank[order], movie[order], score[order]
    by_id = np.argsort(user_ids, kind="stable")
    row = by_id[np.clip(np.searchsorted(user_ids, user, sorter=by_id), 0, len(user_ids) - 1)]
    known_user = user_ids[row] == user
    if not known_user.all():
        report.fail("unknown_user", int((~known_user).sum()), "rows for users not in the snapshot",
                    np.unique(user[~known_user]).tolist())  # fmt: skip
    films_by_id = np.argsort(movie_ids, kind="stable")
    film = films_by_id[
        np.clip(np.searchsorted(movie_ids, movie, sorter=films_by_id), 0, len(movie_ids) - 1)
    ]
    known_film = movie_ids[film] == movie
    if not known_film.all():
        report.fail("unknown_movie", int((~known_film).sum()), "rows with a movie_id outside the vocabulary",
                    np.unique(movie[~known_film]).tolist())  # fmt: skip
    expected = np.minimum(top_n, csr.n_films - csr.counts)
    got = np.bincount(row[known_user], minlength=csr.n_users)
    missing = np.flatnonzero((got == 0) & (expected > 0))
    if len(missing):
        report.fail(
            "missing_user",
            len(missing),
            "snapshot users without recommendations",
            user_ids[missing].tolist(),
        )
    wrong = np.flatnonzero((got != expected) & (got > 0))
    if len(wrong):
        report.fail("row_count", len(wrong), "users without min(N, unseen films) rows",
                    [f"user {user_ids[u]}: {got[u]} rows, expected {expected[u]}" for u in wrong[:EXAMPLES]])  # fmt: skip
    start = np.r_[True, user[1:] != user[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(user)), 0))
    bad_rank = rank != np.arange(len(user)) - group_start + 1
    if bad_rank.any():
        report.fail("rank", int(bad_rank.sum()), "rows whose rank is not contiguous from 1",
                    [f"user {u} rank {r}" for u, r in zip(user[bad_rank][:EXAMPLES], rank[bad_rank][:EXAMPLES])])  # fmt: skip
    key = row.astype(np.int64) * csr.n_films + film
    ok = known_user & known_film
    seen = ok & np.isin(key, csr.entry_rows() * csr.n_films + csr.indices)
    if seen.any():
        report.fail("seen_film", int(seen.sum()), "rows recommend a film the user rated",
                    [f"user {u} movie {m}" for u, m in zip(user[seen][:EXAMPLES], movie[seen][:EXAMPLES])])  # fmt: skip
    sorted_keys = np.sort(key[ok])
    dup = sorted_keys[1:] == sorted_keys[:-1]
    if dup.any():
        report.fail("duplicate", int(dup.sum()), "duplicate (user, film) rows",
                    [f"user {user_ids[k // csr.n_films]} movie {movie_ids[k % csr.n_films]}"
                     for k in sorted_keys[1:][dup][:EXAMPLES]])  # fmt: skip
    finite = np.isfinite(score)
    if not finite.all():
        report.fail("non_finite_score", int((~finite).sum()), "rows with a NaN or infinite score",
                    np.unique(user[~finite]).tolist())  # fmt: skip
    rising = ~start[1:] & (score[1:] > score[:-1])
    if rising.any():
        report.fail("score_order", int(rising.sum()), "rows score higher than the rank before them",
                    np.unique(user[1:][rising]).tolist())  # fmt: skip
    return report.failures


def streamed_failures(batches: list[pa.RecordBatch], user_ids: np.ndarray, csr: RatingsCSR,
                      movie_ids: np.ndarray, top_n: int) -> dict[str, str]:  # fmt: skip
    checks = RowChecks(user_ids, csr.indptr, csr.indices, movie_ids, top_n)
    for batch in batches:
        checks.count(batch.select(["user_id"]))
    for batch in batches:
        checks.check(batch)
    report = Report(DS)
    for name, (count, what, examples) in checks.failures().items():
        report.fail(name, count, what, examples)
    return report.failures


# ---------------------------------------------------------------- data


def snapshot(rng: np.random.Generator, n_users: int = 60, n_films: int = 40) -> tuple:
    """(user_ids in a shuffled row order, the films each rated (CSR), movie_ids, good rows)."""
    user_ids = rng.permutation(np.arange(n_users) * 3 + 11).astype(np.int64)
    movie_ids = rng.permutation(np.arange(n_films) * 7 + 5).astype(np.int64)
    lists = [
        sorted(rng.choice(n_films, int(k), replace=False).tolist())
        for k in rng.integers(0, 12, n_users)
    ]
    lists[0] = list(range(n_films - 2))  # fewer unseen films than TOP_N: a short list
    csr = RatingsCSR.from_lists(lists, n_films)
    rows = []
    for r, rated in enumerate(lists):
        unseen = rng.permutation(np.setdiff1d(np.arange(n_films), rated))[:TOP_N]
        scores = np.sort(rng.standard_normal(len(unseen)).astype(np.float32))[::-1]
        rows += [(int(user_ids[r]), k + 1, int(movie_ids[f]), float(s), "model", "v")
                 for k, (f, s) in enumerate(zip(unseen, scores, strict=True))]  # fmt: skip
    table = pa.Table.from_pylist([dict(zip(SCHEMA.names, r, strict=True)) for r in rows], SCHEMA)
    return (
        user_ids,
        csr,
        movie_ids,
        table.sort_by([("user_id", "ascending"), ("rank", "ascending")]),
    )


def corrupt(rng: np.random.Generator, table: pa.Table, csr: RatingsCSR, user_ids: np.ndarray,
            movie_ids: np.ndarray) -> pa.Table:  # fmt: skip
    """``table`` with a few random contracts broken at random rows."""
    df = table.to_pandas()
    for _ in range(int(rng.integers(1, 4))):
        i, j = (int(x) for x in rng.integers(0, len(df), 2))
        kind = rng.integers(0, 10)
        if kind == 0:  # a film the user rated
            r = int(np.flatnonzero(user_ids == df.at[i, "user_id"])[0])
            if csr.counts[r]:
                df.at[i, "movie_id"] = movie_ids[csr.indices[csr.indptr[r]]]
        elif kind == 1:  # a film twice
            df.at[i, "movie_id"] = df.at[max(i - 1, 0), "movie_id"]
        elif kind == 2:
            df.at[i, "rank"] = int(rng.integers(-2, 9))
        elif kind == 3:
            df.at[i, "score"] = float(rng.choice([np.nan, np.inf, 99.0]))
        elif kind == 4:
            # another user's row, or no user's
            df.at[i, "user_id"] = int(rng.choice([df.at[j, "user_id"], 7]))
        elif kind == 5:
            df.at[i, "movie_id"] = 4
        elif kind == 6:
            df = df[df.user_id != df.at[i, "user_id"]].reset_index(drop=True)
        elif kind == 7:
            df = df.drop(index=i).reset_index(drop=True)
        elif kind == 8:
            df = pa.concat_tables([pa.Table.from_pandas(df, SCHEMA, preserve_index=False),
                                   table.slice(i, 3)]).to_pandas()  # fmt: skip
        else:
            df.at[i, "score"], df.at[j, "score"] = df.at[j, "score"], df.at[i, "score"]
    return pa.Table.from_pandas(df, SCHEMA, preserve_index=False)


def layouts(rng: np.random.Generator, table: pa.Table) -> list[list[pa.RecordBatch]]:
    """The same rows as batches: sorted in odd sizes, shuffled, and in reversed blocks."""
    n = table.num_rows
    shuffled = table.take(rng.permutation(n))
    cuts = np.unique(np.r_[0, rng.integers(0, n, 7), n])
    blocks = [table.slice(a, b - a) for a, b in itertools.pairwise(cuts)][::-1]
    return [
        table.to_batches(max_chunksize=int(rng.integers(1, 40))),
        shuffled.to_batches(max_chunksize=int(rng.integers(5, 200))),
        [b for block in blocks for b in block.to_batches(max_chunksize=17)],
        [table.combine_chunks().to_batches()[0]] if n else [],
    ]


# ---------------------------------------------------------------- the checks alone


@pytest.mark.parametrize("seed", range(40))
def test_streamed_checks_report_what_the_whole_table_check_reports(seed):
    rng = np.random.default_rng(seed)
    user_ids, csr, movie_ids, good = snapshot(rng)
    table = good if seed == 0 else corrupt(rng, good, csr, user_ids, movie_ids)
    want = reference_failures(table, user_ids, csr, movie_ids, TOP_N)
    assert (want == {}) == (seed == 0)
    for batches in layouts(rng, table):
        assert streamed_failures(batches, user_ids, csr, movie_ids, TOP_N) == want


def test_id_index_looks_up_dense_and_sparse_ids():
    # a lookup table over the ids' range, or a search; a repeated id (3) gives its first row
    for big, dense in ((9, True), (10**12, False)):
        index = IdIndex(np.array([5, 3, big, 4, 3]))
        assert (index.table is not None) == dense
        assert index.find(np.array([3, 4, 5, big])).tolist() == [1, 3, 0, 2]
        assert index.find(np.array([0, -8, 6, 2**40, 10**12 + 1])).tolist() == [-1] * 5
    assert IdIndex(np.array([], np.int64)).find(np.array([1])).tolist() == [-1]


# ---------------------------------------------------------------- the gate, files on disk


def warehouse(
    root: Path, rng: np.random.Generator
) -> tuple[Warehouse, pa.Table, RatingsCSR, np.ndarray, np.ndarray]:
    """Features, a model and its good staged rows (written by the tests as they need)."""
    user_ids, csr, movie_ids, good = snapshot(rng)
    wh = Warehouse(str(root))
    features, models = Path(wh.features(DS)), Path(wh.models(DS))
    (features / "users").mkdir(parents=True)
    (features / "films").mkdir()
    models.mkdir(parents=True)
    pq.write_table(pa.table({
        "user_idx": pa.array(np.arange(len(user_ids)), pa.int32()), "user_id": pa.array(user_ids, pa.int32()),
        "film_idx": pa.ListArray.from_arrays(pa.array(csr.indptr.astype(np.int32)), pa.array(csr.indices, pa.int32())),
        "rating": pa.ListArray.from_arrays(pa.array(csr.indptr.astype(np.int32)),
                                           pa.array(np.full(len(csr.indices), 4.0), pa.float32())),
        "timestamp": pa.ListArray.from_arrays(pa.array(csr.indptr.astype(np.int32)),
                                              pa.array(np.zeros(len(csr.indices)), pa.int64())),
    }), features / "users" / "part-00000.parquet")  # fmt: skip
    n = len(movie_ids)
    pq.write_table(pa.table({
        "film_idx": pa.array(np.arange(n), pa.int32()), "movie_id": pa.array(movie_ids, pa.int32()),
        "year": pa.array(np.full(n, 2000), pa.int32()), "genres": pa.array([[1.0]] * n, pa.list_(pa.float32())),
        "genome": pa.nulls(n, pa.list_(pa.float32())), "n_ratings": pa.array(np.ones(n), pa.int32()),
        "mean_rating": pa.array(np.full(n, 3.5), pa.float32()),
    }), features / "films" / "part-00000.parquet")  # fmt: skip
    hashes = {
        "films": ids_hash(movie_ids),
        "genres": names_hash(["Drama"]),
        "genome_tags": ids_hash([]),
    }
    (features / "manifest.json").write_text(json.dumps({"ds": DS, "genres": ["Drama"], "genome_tag_ids": [],
                                                        "hashes": hashes}))  # fmt: skip
    weights = b"user weights"
    (models / "user_ae.pt").write_bytes(weights)
    (models / "film_ae.pt").write_bytes(b"film weights")
    (models / "manifest.json").write_text(
        json.dumps(
            {
                "ds": DS,
                "vocabulary": hashes,
                "metrics": {"model": {"ndcg@10": 0.3}, "popularity": {"ndcg@10": 0.1}},
            }
        )
    )
    version = version_string(DS, hashlib.sha256(weights).hexdigest())
    good = good.set_column(5, "model_version", pa.array([version] * good.num_rows))
    return wh, good, csr, user_ids, movie_ids


def stage(wh: Warehouse, parts: list[pa.Table], row_group: int) -> Path:
    """The staged partition as ``parts`` files of ``row_group``-row groups, and the scoring record."""
    path = Path(wh.recommendations_staging(DS))
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.parquet"):
        old.unlink()
    for i, part in enumerate(parts):
        pq.write_table(part, path / f"part-{i:05d}.parquet", row_group_size=row_group)
    version = parts[0].column("model_version")[0].as_py()
    (path / SCORING_META).write_text(json.dumps({"top_n": TOP_N, "model_version": version}))
    return path


@pytest.fixture
def wh_good(tmp_path):
    return warehouse(tmp_path / "wh", np.random.default_rng(3))


def straddling(good: pa.Table, rated: np.ndarray) -> tuple[int, pa.Table, pa.Table]:
    """(a user with a full list and rated films, the rows up to and with that user's first
    two, the rest); ``rated`` (n,) the films each user rated, by user id."""
    users = good.column("user_id").to_numpy()
    user = next(u for u in users[::-1] if (users == u).sum() == TOP_N and rated[u])
    cut = int(np.flatnonzero(users == user)[0]) + 2
    return int(user), good.slice(0, cut), good.slice(cut)


def rated_by_id(csr: RatingsCSR, user_ids: np.ndarray) -> np.ndarray:
    counts = np.zeros(int(user_ids.max()) + 1, np.int64)
    counts[user_ids] = csr.counts
    return counts


def test_a_user_straddling_row_groups_and_files_passes(wh_good):
    wh, good, csr, user_ids, _ = wh_good
    _, head, tail = straddling(good, rated_by_id(csr, user_ids))
    for parts, row_group in (([good], 3), ([good], 7), ([head, tail], 4), ([tail, head], 1000)):
        stage(wh, parts, row_group)
        report = run_check(wh, DS, min_model_ratio=1.0)
        assert report.passed and report.figures["rows"] == good.num_rows
        (Path(wh.recommendations_staging(DS)) / CHECK_FILE).unlink()


def with_row(table: pa.Table, index: int, **values: object) -> pa.Table:
    rows = table.to_pylist()
    rows[index] = rows[index] | values
    return pa.Table.from_pylist(rows, SCHEMA)


@pytest.mark.parametrize("contract", ["duplicate", "seen_film", "rank", "score_order", "row_count"])
def test_a_broken_row_in_another_file_than_its_users_other_rows_fails_the_gate(wh_good, contract):
    """The user's first two rows in one file, the rest (with the broken row) in another,
    after other users' rows: only a check that brings a user's rows together sees these."""
    wh, good, csr, user_ids, movie_ids = wh_good
    user, head, tail = straddling(good, rated_by_id(csr, user_ids))
    first = head.num_rows - 2  # the user's rank 1 in head; its ranks 3..5 lead tail
    rated = csr.indices[csr.indptr[int(np.flatnonzero(user_ids == user)[0])]]  # a film it rated
    change = {
        "duplicate": {"movie_id": head.column("movie_id")[first].as_py()},  # rank 1's film at 3
        "seen_film": {"movie_id": int(movie_ids[rated])},
        "rank": {"rank": 2},  # rank 2 twice, no rank 3
        "score_order": {"score": head.column("score")[first + 1].as_py() + 1.0},  # above rank 2
    }.get(contract)
    if contract == "row_count":
        tail = tail.slice(1)  # rank 3 missing: 4 rows, ranks 1, 2, 4, 5
    else:
        tail = with_row(tail, 0, **change)
    stage(wh, [tail, head], row_group=2)  # the user's rows in two files, the other file first
    with pytest.raises(GateFailed, match=f"- {contract}: ") as raised:
        run_check(wh, DS, min_model_ratio=1.0)
    [line] = [x for x in str(raised.value).splitlines() if x.startswith(f"  - {contract}: ")]
    assert line.startswith(f"  - {contract}: 1 ") and str(user) in line, line
    assert not (Path(wh.recommendations_staging(DS)) / CHECK_FILE).exists()
    if contract == "row_count":
        assert "- rank: " in str(raised.value)  # ranks 1, 2, 4, 5: not contiguous either


def test_labels_and_model_version_are_checked_across_row_groups(wh_good):
    wh, good, *_ = wh_good
    stranger = with_row(good, good.num_rows - 1, source="als", model_version="other")
    stage(wh, [stranger], row_group=4)
    with pytest.raises(GateFailed) as raised:
        run_check(wh, DS, min_model_ratio=1.0)
    text = str(raised.value)
    assert "- source: 1 unknown source values (e.g. als)" in text
    assert "- model_version: 2 model_version values (expected one)" in text
    assert "- model_version_mismatch: " in text


def test_a_missing_column_and_a_damaged_file_are_named(wh_good):
    wh, good, *_ = wh_good
    path = stage(wh, [good.drop_columns(["score"])], row_group=10)
    with pytest.raises(Exception, match=r"lack column\(s\) score: re-run the score job"):
        run_check(wh, DS, min_model_ratio=1.0)
    stage(wh, [good], row_group=10)
    data = (path / "part-00000.parquet").read_bytes()
    (path / "part-00000.parquet").write_bytes(data[: len(data) // 2] + bytes(len(data) // 2))
    with pytest.raises(Exception, match="unreadable staged recommendations"):
        run_check(wh, DS, min_model_ratio=1.0)
