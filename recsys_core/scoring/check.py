"""The quality gate: a staging partition of ``recommendations`` must pass before publish.

Contracts checked (nothing is published when one breaks):
every snapshot user present with ``min(N, unseen vocabulary films)`` rows; ranks 1..n
contiguous; no film the user rated; no duplicate (user, film); finite scores,
non-increasing with rank; every movie_id in the vocabulary; a known ``source``; one
``model_version``, the model now in ``models/ds=…`` (its weights exist and hash to it: rows
scored before a re-train never pass with the new model's metrics); and that model's
validation NDCG@10 at least ``min_model_ratio`` times popularity's on the same users (from
its manifest).

The rows are read a row group at a time, never whole (``row_checks``: two passes, per-user
contracts checked once all of a user's rows have arrived, whatever the files' layout), so
memory is the snapshot's features plus a few batches.

On success ``_check.json`` (with the ``model_version`` it vouches for) is written into the
staging partition; publish refuses a partition without it, or whose rows or ``models/``
no longer match that version.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from recsys_core import defaults, fs_swap
from recsys_core.data.features import load_features
from recsys_core.errors import ConfigError, InputError, reading
from recsys_core.model_version import current_model_version, mismatch
from recsys_core.paths import Warehouse
from recsys_core.publish.contract import CHECK_FILE, SCHEMA, SOURCES
from recsys_core.publish.parquet_read import file_schemas, read_batches
from recsys_core.scoring.row_checks import EXAMPLES, RowChecks
from recsys_core.scoring.score import SCORING_META
from recsys_core.training import artifacts

log = logging.getLogger(__name__)
# at most this many rows a batch; a batch never spans row groups, so usually one group
BATCH_ROWS = 1 << 20
# source and model_version read as dictionaries: a handful of values, never a string per row
DICTIONARY_COLUMNS = ("source", "model_version")


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


def check_model_quality(
    report: Report, model_manifest: dict, min_ratio: float, where: str = ""
) -> None:
    with reading(
        where, "model manifest (no validation metrics)", "re-run the train job for that date"
    ):
        model = float(model_manifest["metrics"]["model"]["ndcg@10"])
        popularity = float(model_manifest["metrics"]["popularity"]["ndcg@10"])
    report.figures.update(
        {"model_ndcg@10": model, "popularity_ndcg@10": popularity, "min_model_ratio": min_ratio}
    )
    if math.isnan(model) or math.isnan(popularity):
        report.fail("model_quality", 1, "model: validation ndcg@10 is NaN: no validation user had a liked rating "
                    "to find (re-train on features with liked ratings)", [])  # fmt: skip
    elif not model >= min_ratio * popularity:
        report.fail("model_quality", 1, f"model: validation ndcg@10 {model:.4f} < {min_ratio} x popularity "
                    f"{popularity:.4f}", [])  # fmt: skip


def check_model_identity(
    report: Report, ds: str, versions: list, scored_by: str, current: str
) -> None:
    """The rows, the scoring record and ``models/ds=…`` must all name the same model.

    The metrics the gate reads are those of the model now in ``models/``; rows scored by
    an earlier model (train re-run after score) must be scored again before they pass.
    """
    staged = [v for v in versions if v]
    if staged and set(staged) != {current}:
        report.fail(
            "model_version_mismatch", 1, mismatch(ds, ", ".join(map(str, staged)), current), []
        )
    elif scored_by != current:
        report.fail(
            "model_version_mismatch", 1, mismatch(ds, scored_by, current, "the scoring record"), []
        )


class Labels:
    """The ``source`` and ``model_version`` values of the staged rows, gathered batch by batch."""

    def __init__(self) -> None:
        self.sources: set = set()
        self.versions: dict = {}  # in the order rows carry them (a dict keeps insertion order)

    def add(self, batch: pa.RecordBatch) -> None:
        self.sources.update(pc.unique(batch.column("source")).to_pylist())
        self.versions.update(dict.fromkeys(pc.unique(batch.column("model_version")).to_pylist()))

    def check(self, report: Report) -> None:
        unknown = self.sources - set(SOURCES)
        if unknown:
            report.fail("source", len(unknown), "unknown source values", sorted(map(str, unknown)))
        versions = list(self.versions)
        if len(versions) != 1 or not versions[0]:
            report.fail(
                "model_version", len(versions), "model_version values (expected one)", versions
            )


def staged_batches(staging: str, columns: list[str], fix: str) -> Iterator[pa.RecordBatch]:
    """The staged rows of ``columns``, a row group (at most ``BATCH_ROWS`` rows) at a time.

    Only the reading is under ``reading`` (a damaged file becomes one CorruptFile line);
    what the caller does with a batch raises as itself.
    """
    batches = read_batches(staging, BATCH_ROWS, columns, DICTIONARY_COLUMNS)
    while True:
        with reading(staging, "staged recommendations (a parquet file is damaged)", fix):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def check_staged_rows(
    report: Report, staging: str, checks: RowChecks, labels: Labels, fix: str
) -> None:
    """Stream the staged partition twice through ``checks`` (and once through ``labels``)."""
    with reading(staging, "staged recommendations (a parquet file is damaged)", fix):
        schemas = file_schemas(staging)
    for path, schema in schemas.items():
        missing = [name for name in SCHEMA.names if name not in schema.names]
        if missing:
            raise InputError(f"{path}: the staged rows lack column(s) {', '.join(missing)}: {fix}")
    for batch in staged_batches(staging, ["user_id"], fix):
        checks.count(batch)
    for batch in staged_batches(staging, list(SCHEMA.names), fix):
        checks.check(batch)
        labels.add(batch)
    for name, (count, what, examples) in checks.failures().items():
        report.fail(name, count, what, examples)
    labels.check(report)
    report.figures.update(checks.figures())


def run_check(
    warehouse: Warehouse, ds: str, min_model_ratio: float = defaults.MIN_MODEL_RATIO
) -> Report:
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
        raise InputError(
            f"no scored partition at {staging}: run the score job for ds={ds} first"
        ) from exc
    fs, inner = fs_swap.filesystem(staging)
    if fs_swap.exists(f"{staging}/{CHECK_FILE}"):  # a pass from an earlier scoring must not linger
        fs.delete_file(f"{inner}/{CHECK_FILE}")
    features = load_features(warehouse.features(ds))
    model_dir = warehouse.models(ds)
    manifest = artifacts.read_manifest(model_dir)
    artifacts.check_vocabulary(manifest, features.manifest, model_dir)
    current = current_model_version(model_dir, ds)
    report, labels = Report(ds), Labels()
    users = features.users
    checks = RowChecks(
        users.user_ids, users.csr.indptr, users.csr.indices, features.films.movie_ids, top_n
    )
    check_staged_rows(report, staging, checks, labels, rescore)
    check_model_identity(report, ds, list(labels.versions), scored_by, current)
    check_model_quality(report, manifest, min_model_ratio, f"{model_dir}/{artifacts.MANIFEST}")
    report.figures.update({"top_n": top_n, "model_version": current})
    if not report.passed:
        raise GateFailed(report.text())
    fs_swap.write_json(f"{staging}/{CHECK_FILE}", {"passed": True, **report.figures})
    log.info("quality gate passed for ds=%s: %s", ds, report.figures)
    return report
