"""The quality gate: a staging partition of ``recommendations`` must pass before publish.

Contracts checked (vectorized over all rows; nothing is published when one breaks):
every snapshot user present with ``min(N, unseen vocabulary films)`` rows; ranks 1..n
contiguous; no film the user rated; no duplicate (user, film); finite scores,
non-increasing with rank; every movie_id in the vocabulary; a known ``source``; one
``model_version``, the model now in ``models/ds=…`` (its weights exist and hash to it: rows
scored before a re-train never pass with the new model's metrics); and that model's
validation NDCG@10 at least ``min_model_ratio`` times popularity's on the same users (from
its manifest).

On success ``_check.json`` (with the ``model_version`` it vouches for) is written into the
staging partition; publish refuses a partition without it, or whose rows or ``models/``
no longer match that version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from recsys_core import defaults, fs_swap
from recsys_core.data.features import load_features
from recsys_core.errors import ConfigError, InputError, reading
from recsys_core.model_version import current_model_version, mismatch
from recsys_core.paths import Warehouse
from recsys_core.publish.contract import CHECK_FILE, SOURCES
from recsys_core.scoring.score import SCORING_META
from recsys_core.training import artifacts

log = logging.getLogger(__name__)
EXAMPLES = 5


class GateFailed(InputError):
    """The staging partition breaks a contract; the message lists each broken one."""


@dataclass
class Report:
    ds: str
    failures: dict[str, str] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)

    def fail(self, contract: str, count: int, what: str, examples: list) -> None:
        shown = ", ".join(str(e) for e in examples[:EXAMPLES])
        self.failures[contract] = f"{count} {what}" + (f" (e.g. {shown})" if shown else "")

    @property
    def passed(self) -> bool:
        return not self.failures

    def text(self) -> str:
        lines = [f"quality gate failed for ds={self.ds}: {len(self.failures)} contract(s) broken"]
        lines += [f"  - {name}: {detail}" for name, detail in self.failures.items()]
        return "\n".join(lines)


def check_model_quality(report: Report, model_manifest: dict, min_ratio: float, where: str = "") -> None:
    with reading(where, "model manifest (no validation metrics)", "re-run the train job for that date"):
        model = float(model_manifest["metrics"]["model"]["ndcg@10"])
        popularity = float(model_manifest["metrics"]["popularity"]["ndcg@10"])
    report.figures.update({"model_ndcg@10": model, "popularity_ndcg@10": popularity, "min_model_ratio": min_ratio})
    if not model >= min_ratio * popularity:
        report.fail("model_quality", 1, f"model: validation ndcg@10 {model:.4f} < {min_ratio} x popularity "
                    f"{popularity:.4f}", [])  # fmt: skip


def check_model_identity(report: Report, ds: str, versions: list, scored_by: str, current: str) -> None:
    """The rows, the scoring record and ``models/ds=…`` must all name the same model.

    The metrics the gate reads are those of the model now in ``models/``; rows scored by
    an earlier model (train re-run after score) must be scored again before they pass.
    """
    staged = [v for v in versions if v]
    if staged and set(staged) != {current}:
        report.fail("model_version_mismatch", 1, mismatch(ds, ", ".join(map(str, staged)), current), [])
    elif scored_by != current:
        report.fail("model_version_mismatch", 1, mismatch(ds, scored_by, current, "the scoring record"), [])


def check_rows(report: Report, table, user_ids: np.ndarray, csr, movie_ids: np.ndarray, top_n: int) -> None:
    """Every row-level contract; ``table`` holds the partition's rows in any order."""
    user = table.column("user_id").to_numpy()
    rank = table.column("rank").to_numpy().astype(np.int64)
    movie = table.column("movie_id").to_numpy()
    score = table.column("score").to_numpy()
    order = np.lexsort((rank, user))
    user, rank, movie, score = user[order], rank[order], movie[order], score[order]

    by_id = np.argsort(user_ids)
    pos = np.clip(np.searchsorted(user_ids, user, sorter=by_id), 0, len(user_ids) - 1)
    row = by_id[pos]
    known_user = user_ids[row] == user
    if not known_user.all():
        report.fail("unknown_user", int((~known_user).sum()), "rows for users not in the snapshot",
                    np.unique(user[~known_user]).tolist())  # fmt: skip
    films_by_id = np.argsort(movie_ids)
    film = films_by_id[np.clip(np.searchsorted(movie_ids, movie, sorter=films_by_id), 0, len(movie_ids) - 1)]
    known_film = movie_ids[film] == movie
    if not known_film.all():
        report.fail("unknown_movie", int((~known_film).sum()), "rows with a movie_id outside the vocabulary",
                    np.unique(movie[~known_film]).tolist())  # fmt: skip

    expected = np.minimum(top_n, csr.n_films - csr.counts)
    got = np.bincount(row[known_user], minlength=csr.n_users)
    missing = np.flatnonzero((got == 0) & (expected > 0))
    if len(missing):
        report.fail("missing_user", len(missing), "snapshot users without recommendations", user_ids[missing].tolist())
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
    seen_keys = csr.entry_rows() * csr.n_films + csr.indices
    seen = ok & np.isin(key, seen_keys)
    if seen.any():
        report.fail("seen_film", int(seen.sum()), "rows recommend a film the user rated",
                    [f"user {u} movie {m}" for u, m in zip(user[seen][:EXAMPLES], movie[seen][:EXAMPLES])])  # fmt: skip
    sorted_keys = np.sort(key[ok])
    dup = sorted_keys[1:] == sorted_keys[:-1]
    if dup.any():
        dups = sorted_keys[1:][dup]
        report.fail("duplicate", int(dup.sum()), "duplicate (user, film) rows",
                    [f"user {user_ids[k // csr.n_films]} movie {movie_ids[k % csr.n_films]}" for k in dups[:EXAMPLES]])  # fmt: skip

    finite = np.isfinite(score)
    if not finite.all():
        report.fail("non_finite_score", int((~finite).sum()), "rows with a NaN or infinite score",
                    np.unique(user[~finite]).tolist())  # fmt: skip
    rising = ~start[1:] & (score[1:] > score[:-1])
    if rising.any():
        report.fail("score_order", int(rising.sum()), "rows score higher than the rank before them",
                    np.unique(user[1:][rising]).tolist())  # fmt: skip
    report.figures.update({"rows": len(user), "users": int((got > 0).sum())})


def check_labels(report: Report, table) -> None:
    sources = set(table.column("source").unique().to_pylist())
    if not sources <= set(SOURCES):
        report.fail("source", len(sources - set(SOURCES)), "unknown source values", sorted(map(str, sources - set(SOURCES))))
    versions = table.column("model_version").unique().to_pylist()
    if len(versions) != 1 or not versions[0]:
        report.fail("model_version", len(versions), "model_version values (expected one)", versions)


def run_check(warehouse: Warehouse, ds: str, min_model_ratio: float = defaults.MIN_MODEL_RATIO) -> Report:
    """Check ``recommendations`` staging for ``ds``; raise ``GateFailed`` with the report."""
    if not min_model_ratio >= 0:
        raise ConfigError(f"--min-model-ratio must be >= 0, got {min_model_ratio}")
    staging = warehouse.recommendations_staging(ds)
    rescore = f"re-run the score job for ds={ds}"
    try:
        with reading(f"{staging}/{SCORING_META}", "scoring record", rescore):
            meta = fs_swap.read_json(f"{staging}/{SCORING_META}")
            top_n, scored_by = int(meta["top_n"]), str(meta["model_version"])
    except FileNotFoundError as exc:
        raise InputError(f"no scored partition at {staging}: run the score job for ds={ds} first") from exc
    fs, inner = fs_swap.filesystem(staging)
    if fs_swap.exists(f"{staging}/{CHECK_FILE}"):  # a pass from an earlier scoring must not linger
        fs.delete_file(f"{inner}/{CHECK_FILE}")
    features = load_features(warehouse.features(ds))
    model_dir = warehouse.models(ds)
    manifest = artifacts.read_manifest(model_dir)
    artifacts.check_vocabulary(manifest, features.manifest, model_dir)
    current = current_model_version(model_dir, ds)
    with reading(staging, "staged recommendations (a parquet file is damaged)", rescore):
        table = pq.read_table(inner, filesystem=fs)
    report = Report(ds)
    check_rows(report, table, features.users.user_ids, features.users.csr, features.films.movie_ids, top_n)
    check_labels(report, table)
    check_model_identity(report, ds, table.column("model_version").unique().to_pylist(), scored_by, current)
    check_model_quality(report, manifest, min_model_ratio, f"{model_dir}/{artifacts.MANIFEST}")
    report.figures.update({"top_n": top_n, "model_version": current})
    if not report.passed:
        raise GateFailed(report.text())
    fs_swap.write_json(f"{staging}/{CHECK_FILE}", {"passed": True, **report.figures})
    log.info("quality gate passed for ds=%s: %s", ds, report.figures)
    return report
