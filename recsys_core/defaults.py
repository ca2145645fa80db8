"""The nightly job's settings a person can change, each default and bound written once.

The config objects (``TrainConfig``, ``ScoreConfig``), the jobs' ``--help`` and the DAG's
Params all read them from here, and the DAG's first task (``recsys_core.run_params``)
checks a run's Params against the same bounds. This module imports nothing, so the DAG
file can read it at parse time without pulling in torch, Spark or pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

SEED = 42  # training's random seed
DEVICE = "auto"  # training and scoring: CUDA when present, else the CPU
MAX_EPOCHS = 50  # most user-AE epochs
# Wall-time cap of the item-item fit + user-AE epochs, minutes. Small data finishes far
# inside it; at full scale on 2 CPU cores it is what bounds the night (issue 15: the whole
# chain in 20 minutes). 10, not 25: there the blended model is within 1% of its 25-minute
# validation NDCG@10 after 2 AE epochs (0.4073 against 0.4096 after 19; bench/RESULTS.md,
# "With the item-item term"), and the AE alone wanders after its 5th.
MAX_MINUTES = 10.0
TOP_N = 100  # films per user in the published table
SCORE_BATCH_USERS = 2048  # users per scoring batch
MIN_USER_FILMS = 1  # users with fewer vocabulary ratings get the most popular unseen films
MIN_FILM_RATINGS = 1  # ratings a film needs to enter the vocabulary (be scored)
MIN_MODEL_RATIO = 1.1  # the gate: the model's validation NDCG@10 >= this x popularity's
KEEP = 30  # ds partitions the published table keeps
SQL_TABLE = "recommendations"
SQL_CONN_ID = "recsys_sql"  # the Airflow Connection of the SQL sink
MAX_REJECT_SHARE = 0.01  # ingest fails when a file rejects more than this share of its rows
SCORING_ENGINES = ("local", "spark")  # one process (GPU when present) or Spark executors


@dataclass(frozen=True)
class RunParam:
    """One Param of a DAG run: its default, JSON-schema type and bounds, and what it means."""

    default: int | float | str
    kind: str  # JSON schema type: integer, number or string
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # the value must be > minimum, not >=
    pattern: str | None = None  # strings: a regular expression the whole value matches

    def schema(self) -> dict:
        """The JSON-schema keywords of the bounds (what ``airflow.sdk.Param`` takes)."""
        out: dict = {}
        if self.minimum is not None:
            out["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out


RUN_PARAMS: dict[str, RunParam] = {
    "top_n": RunParam(TOP_N, "integer", "films per user", 1, 1000),
    "min_film_ratings": RunParam(MIN_FILM_RATINGS, "integer", "ratings a film needs to be scored", 1),
    "max_epochs": RunParam(MAX_EPOCHS, "integer", "cap on user-AE epochs", 1),
    "max_minutes": RunParam(MAX_MINUTES, "number", "cap on the item-item fit + user-AE training time (minutes)", 0,
                            exclusive_minimum=True),
    "seed": RunParam(SEED, "integer", "random seed of training", 0, 2**32 - 1),
    "min_model_ratio": RunParam(MIN_MODEL_RATIO, "number", "gate: model NDCG@10 >= this x popularity's", 0),
    "keep": RunParam(KEEP, "integer", "ds partitions kept in the table", 1),
    "scoring_engine": RunParam(SCORING_ENGINES[0], "string",
                               "where score runs: local (one process, GPU when present) or spark (the executors "
                               "of spark_default, for more users than one machine scores in time)",
                               pattern=r"^(local|spark)$"),
    "encoding": RunParam("", "string", "ingest: the drop's encoding when it is not UTF-8, for every file "
                         "(latin-1, cp1252) or FILE=ENC pairs separated by commas; empty: UTF-8",
                         pattern=r"^[A-Za-z0-9_.=,-]{0,200}$"),
    "layout": RunParam("auto", "string", "ingest: the GroupLens release layout (auto: detected from the files)",
                       pattern=r"^(auto|csv|ml-10m|ml-1m|ml-100k)$"),
    "sql_conn_id": RunParam(SQL_CONN_ID, "string", "Airflow connection of the SQL sink (postgres or sqlite)",
                            pattern=r"^[A-Za-z0-9_.-]{1,250}$"),
}
