"""The real MovieLens latest-small release (and a real genome sample), when present.

The data lives in ../shared/data and is never copied into the project; these tests
skip when it is absent.
"""

from __future__ import annotations

import pytest

from recsys_core.paths import Warehouse
from recsys_core.spark.features import run_features
from recsys_core.spark.ingest import run_ingest

from .conftest import SHARED_DATA

SMALL = SHARED_DATA / "ml-latest-small"
GENOME = SHARED_DATA / "genome-sample"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (SMALL / "ratings.csv").exists(), reason="../shared/data/ml-latest-small absent"),
]


def test_ml_latest_small_with_real_genome(spark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in SMALL.glob("*.csv"):
        (raw / f.name).symlink_to(f)
    for f in GENOME.glob("*.csv"):
        (raw / f.name).symlink_to(f)
    wh = Warehouse(str(tmp_path / "wh"))
    # The genome sample covers movieIds 1-158 of the 20M release; 14 of those films are not
    # in latest-small, so their 14 x 1,128 genome rows are rightly rejected (9.6%).
    summary = run_ingest(spark, str(raw), wh, "2018-09-30", max_reject_share=0.1)
    ratings = summary.files["ratings.csv"]
    assert (ratings.rows_read, ratings.kept, ratings.rejected) == (100_836, 100_836, 0)
    assert (summary.users, summary.rated_films) == (610, 9_724)
    assert summary.files["movies.csv"].kept == 9_742
    genome = summary.files["genome-scores.csv"]
    assert genome.rejected_by_reason == {"unknown_movie": 14 * 1_128}
    assert genome.kept == 164_688 - 14 * 1_128

    manifest = run_features(spark, wh, "2018-09-30")
    counts = manifest["counts"]
    assert (counts["users"], counts["films"], counts["ratings"]) == (610, 9_724, 100_836)
    assert len(manifest["genome_tag_ids"]) == 1_128
    assert counts["films_with_genome"] == 132
    assert "(no genres listed)" not in manifest["genres"] and "Sci-Fi" in manifest["genres"]
