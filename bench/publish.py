"""Benchmark the quality gate and publish on a synthetic staged partition of full size.

    .venv/bin/python bench/publish.py                       # 283,228 users x 100 = 28.3M rows
    .venv/bin/python bench/publish.py --users 28323 --postgres
    .venv/bin/python bench/publish.py --reuse --files 8     # the Spark scorer's layout: 8 part files

Builds (or with ``--reuse`` keeps) a warehouse under ``--dir`` holding only what the gate
and publish read: ``features/ds=…`` (each user's rated films, MovieLens-shaped: log-normal
activity, mean ~98 films a user, popularity-skewed films; no genome), ``models/ds=…``
(weights are random bytes: only their sha256 is read; a manifest with validation metrics),
and the staged partition ``_staging/recommendations/ds=…`` of ``--top-n`` unseen films per
user, written by the local scorer's own writer (``score.rows_writer``, ``write_in_batches``:
one zstd file, one row group per 2,048 users) or, with ``--files N``, split into N files by
user range.

Then runs ``jobs/check.py``, ``jobs/publish.py`` into a fresh SQLite file, the same publish
again (it replaces the ds), and with ``--postgres`` ``jobs/publish.py`` into a throwaway
PostgreSQL server (fsync off, as the tests start it), each as its own process: wall seconds
and peak RSS (``prep.measure``), and the publish job's own split (Parquet side, SQL side).
Targets on the 2-core dev machine at full size: the gate <= 30 s, SQLite publish <= 60 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prep import BIN, ROOT, measure

from recsys_core import fs_swap
from recsys_core.data.vocab import ids_hash, names_hash
from recsys_core.model_version import version_string
from recsys_core.paths import Warehouse
from recsys_core.scoring.score import SCORING_META, rows_table, rows_writer, write_in_batches

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]
SCORE_BATCH = (
    2048  # users a row group, as the local scorer writes them (defaults.SCORE_BATCH_USERS)
)
CHUNK_USERS = 20_000  # users generated at a time (bounds the generator's memory)


def seen_films(
    rng: np.random.Generator, n_users: int, n_films: int
) -> tuple[np.ndarray, np.ndarray]:
    """((n_users + 1,) offsets, film_idx sorted per user): each user's rated films.

    Activity log-normal (median ~42, mean ~98 films, as MovieLens latest), clipped to
    [1, n_films // 7]; films drawn with Zipf-like popularity (weight 1 / (rank + 10)).
    """
    counts = np.clip(rng.lognormal(np.log(42.0), 1.4, n_users), 1, n_films // 7).astype(np.int64)
    weight = 1.0 / (np.arange(n_films) + 10.0)
    popularity = rng.permutation(n_films)  # film_idx of each popularity rank
    cdf = np.cumsum(weight) / weight.sum()
    offsets, films = [np.zeros(1, np.int64)], []
    for lo in range(0, n_users, CHUNK_USERS):
        part = counts[lo : lo + CHUNK_USERS]
        rows = np.repeat(np.arange(len(part), dtype=np.int64), part)
        drawn = popularity[np.minimum(np.searchsorted(cdf, rng.random(len(rows))), n_films - 1)]
        keys = np.unique(rows * n_films + drawn)  # a film drawn twice is rated once
        films.append((keys % n_films).astype(np.int32))
        offsets.append(
            offsets[-1][-1] + np.cumsum(np.bincount(keys // n_films, minlength=len(part)))
        )
    return np.concatenate(offsets), np.concatenate(films)


def write_features(out: Path, ds: str, user_ids: np.ndarray, movie_ids: np.ndarray, offsets: np.ndarray,
                   films: np.ndarray, files: int) -> None:  # fmt: skip
    """``features/ds=…`` in the features job's schema (users range-partitioned in ``files`` files)."""
    (out / "films").mkdir(parents=True)
    (out / "users").mkdir()
    n_films = len(movie_ids)
    pq.write_table(pa.table({
        "film_idx": pa.array(np.arange(n_films), pa.int32()), "movie_id": pa.array(movie_ids, pa.int32()),
        "title": pa.array([f"Film {m}" for m in movie_ids]), "year": pa.array(np.full(n_films, 2000), pa.int32()),
        "genres": pa.array([[1.0, 0.0, 0.0, 0.0, 0.0]] * n_films, pa.list_(pa.float32())),
        "genome": pa.nulls(n_films, pa.list_(pa.float32())), "n_ratings": pa.array(np.ones(n_films), pa.int32()),
        "mean_rating": pa.array(np.full(n_films, 3.5), pa.float32()),
    }), out / "films" / "part-00000.parquet")  # fmt: skip
    bounds = np.linspace(0, len(user_ids), files + 1).astype(np.int64)
    for i in range(files):
        lo, hi = bounds[i], bounds[i + 1]
        local = (offsets[lo : hi + 1] - offsets[lo]).astype(np.int32)
        values = films[offsets[lo] : offsets[hi]]
        n = len(values)
        pq.write_table(pa.table({
            "user_idx": pa.array(np.arange(lo, hi), pa.int32()), "user_id": pa.array(user_ids[lo:hi], pa.int32()),
            "film_idx": pa.ListArray.from_arrays(pa.array(local), pa.array(values)),
            "rating": pa.ListArray.from_arrays(pa.array(local), pa.array(np.full(n, 4.0, np.float32))),
            "timestamp": pa.ListArray.from_arrays(pa.array(local), pa.array(np.zeros(n, np.int64))),
        }), out / "users" / f"part-{i:05d}.parquet")  # fmt: skip
    fs_swap.write_json(str(out / "manifest.json"), {
        "ds": ds, "genres": GENRES, "genome_tag_ids": [],
        "hashes": {"films": ids_hash(movie_ids), "users": ids_hash(user_ids), "genres": names_hash(GENRES),
                   "genome_tags": ids_hash([])},
    })  # fmt: skip


def write_model(out: Path, ds: str, movie_ids: np.ndarray, rng: np.random.Generator) -> str:
    """``models/ds=…``: random weight bytes and a manifest with validation metrics; its model_version."""
    out.mkdir(parents=True)
    weights = {"film_ae.pt": rng.bytes(4096), "user_ae.pt": rng.bytes(4096)}
    for name, data in weights.items():
        (out / name).write_bytes(data)
    fs_swap.write_json(str(out / "manifest.json"), {
        "ds": ds, "vocabulary": {"films": ids_hash(movie_ids), "genres": names_hash(GENRES),
                                 "genome_tags": ids_hash([])},
        "metrics": {"model": {"ndcg@10": 0.41}, "popularity": {"ndcg@10": 0.075}},
    })  # fmt: skip
    return version_string(ds, hashlib.sha256(weights["user_ae.pt"]).hexdigest())


def unseen_lists(rng: np.random.Generator, offsets: np.ndarray, films: np.ndarray, rows: np.ndarray,
                 n_films: int, top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """((B, top_n) film_idx, (B, top_n) scores falling with rank, (B,) count) of the users ``rows``.

    Candidates walk the films from a random start by a stride coprime with ``n_films`` (no
    film twice); the first ``min(top_n, unseen)`` unseen ones are the user's list.
    """
    stride = next(s for s in range(7919, n_films + 7919) if np.gcd(s, n_films) == 1)
    width = min(n_films, 3 * top_n)
    starts = rng.integers(0, n_films, len(rows))
    candidates = (starts[:, None] + np.arange(width)[None, :] * stride) % n_films
    lo, hi = offsets[rows[0]], offsets[rows[-1] + 1]  # rows are one contiguous range
    seen_keys = (
        np.repeat(np.arange(rows[0], rows[-1] + 1), np.diff(offsets[rows[0] : rows[-1] + 2]))
        * n_films
    )
    seen_keys += films[lo:hi]
    keys = rows[:, None] * n_films + candidates
    seen = np.isin(keys, seen_keys)
    count = np.minimum(top_n, n_films - np.diff(offsets)[rows])
    unseen_rank = np.cumsum(~seen, axis=1)
    if np.any(unseen_rank[:, -1] < count):
        raise SystemExit("a user has too few unseen candidates: lower --top-n or raise --films")
    pick = (~seen) & (unseen_rank <= top_n)
    chosen = np.zeros((len(rows), top_n), np.int64)
    chosen[np.nonzero(pick)[0], unseen_rank[pick] - 1] = candidates[pick]
    scores = -np.sort(-rng.standard_normal((len(rows), top_n)).astype(np.float32), axis=1)
    return chosen, scores, count


def build(
    root: Path, ds: str, n_users: int, n_films: int, top_n: int, files: int, seed: int
) -> dict:
    """Write the warehouse at ``root`` (replacing it); return what it holds."""
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    wh = Warehouse(str(root))
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    movie_ids = np.sort(rng.choice(4 * n_films, n_films, replace=False) + 1).astype(np.int64)
    offsets, films = seen_films(rng, n_users, n_films)
    write_features(Path(wh.features(ds)), ds, user_ids, movie_ids, offsets, films, files=8)
    version = write_model(Path(wh.models(ds)), ds, movie_ids, rng)

    def rows_of(part: np.ndarray) -> pa.Table:
        chosen, scores, count = unseen_lists(rng, offsets, films, part, n_films, top_n)
        return rows_table(user_ids[part], chosen, scores, count, movie_ids, "model", version)

    def write(staging: str) -> None:
        bounds = np.linspace(0, n_users, files + 1).astype(np.int64)
        written = 0
        for i in range(files):
            rows = np.arange(bounds[i], bounds[i + 1])
            with rows_writer(f"{staging}/part-{i:05d}.parquet") as writer:
                written += write_in_batches(writer, rows, SCORE_BATCH, rows_of)
        fs_swap.write_json(f"{staging}/{SCORING_META}", {
            "ds": ds, "top_n": top_n, "model_version": version, "engine": "bench", "users": n_users,
            "model_users": n_users, "popularity_users": 0, "rows": written, "films": n_films,
        })  # fmt: skip

    fs_swap.publish_dir(wh.recommendations_staging(ds), write)
    meta = fs_swap.read_json(f"{wh.recommendations_staging(ds)}/{SCORING_META}")
    return {
        "users": n_users,
        "films": n_films,
        "ratings": int(offsets[-1]),
        "rows": meta["rows"],
        "files": files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=283_228)
    parser.add_argument("--films", type=int, default=53_215)
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument(
        "--files", type=int, default=1, help="staged part files (1: the local scorer's layout)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ds", default="2018-09-30")
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench-publish"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the warehouse built by an earlier run"
    )
    parser.add_argument(
        "--postgres", action="store_true", help="also publish into a throwaway PostgreSQL"
    )
    args = parser.parse_args()
    if args.dir.resolve().is_relative_to(ROOT):
        raise SystemExit(f"--dir {args.dir} is inside the repository: pick a scratch directory")

    root = args.dir / f"warehouse-{args.users}x{args.top_n}-{args.files}f-{args.seed}"
    info_path = root / "bench.json"
    if args.reuse and info_path.exists():
        info = json.loads(info_path.read_text())
    else:
        print(f"--- building {root}", flush=True)
        info = build(root, args.ds, args.users, args.films, args.top_n, args.files, args.seed)
        info_path.write_text(json.dumps(info))
    wh = Warehouse(str(root))
    shutil.rmtree(root / "recommendations", ignore_errors=True)
    for leftover in (
        root / "recommendations.db",
        Path(wh.recommendations_staging(args.ds)) / "_check.json",
    ):
        leftover.unlink(missing_ok=True)

    py = str(BIN / "python")
    common = ["--warehouse", str(root), "--ds", args.ds]
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_SQL_URL"}
    sqlite_url = f"sqlite:///{root}/recommendations.db"
    cpu = children_cpu()
    gate = measure("check", [py, "jobs/check.py", *common, "--min-model-ratio", "1.1"], env)
    results = [("check (gate)", *gate, {}, children_cpu() - cpu, load_average())]
    for name in ("publish parquet+sqlite", "publish again (replace)"):
        cmd = [py, "jobs/publish.py", *common, "--sql-url", sqlite_url]
        cpu = children_cpu()
        results.append((name, *timed_publish(name, cmd, env), children_cpu() - cpu, load_average()))
    if args.postgres:
        sys.path.insert(0, str(ROOT))
        from tests.pg import PostgresServer, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("no PostgreSQL server binaries: run scripts/ensure_postgres.sh")
        server = PostgresServer(bin_dir).start()
        try:
            pg_env = {
                **env,
                "RECSYS_SQL_URL": server.new_database(),
            }  # in the environment: never echoed
            for name in ("publish parquet+postgres", "publish again (postgres)"):
                cmd = [py, "jobs/publish.py", *common]
                cpu = children_cpu()
                timed = timed_publish(name, cmd, pg_env)
                results.append((name, *timed, children_cpu() - cpu, load_average()))
        finally:
            server.stop()

    print(
        f"\n{info['users']:,} users x top {args.top_n} = {info['rows']:,} rows in {info['files']} staged "
        f"file(s); {info['films']:,} films, {info['ratings']:,} ratings; {os.cpu_count()} cores"
    )
    print(
        f"{'step':<26} {'wall s':>7} {'cpu s':>6} {'peak GiB':>9} {'parquet s':>10} {'sql s':>7} {'load':>5}"
    )
    for name, wall, peak, split, cpu, load in results:
        parquet, sql = (split.get(k, "") for k in ("parquet_seconds", "sql_seconds"))
        print(
            f"{name:<26} {wall:>7.1f} {cpu:>6.1f} {peak:>9.2f} {parquet!s:>10} {sql!s:>7} {load:>5}"
        )
    print(
        "cpu: user + system seconds of the job's process (not PostgreSQL's server); load: the 1-minute"
    )
    print("load average when the step ended (2 cores, shared with other work)")


def timed_publish(name: str, cmd: list[str], env: dict[str, str]) -> tuple[float, float, dict]:
    """``measure`` a publish job; also return the split its JSON summary reports."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        wall, peak = measure(name, ["bash", "-c", 'exec "$@" > "$0"', str(out), *cmd], env)
        summary = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    return wall, peak, {k: summary.get(k) for k in ("parquet_seconds", "sql_seconds")}


def children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    """The 1-minute load average now (the dev machine is shared: read timings against it)."""
    return f"{os.getloadavg()[0]:.1f}"


if __name__ == "__main__":
    main()
