"""recsys_core: the library behind the nightly MovieLens recommender.

Nothing in this package imports Airflow; Spark is imported only by ``recsys_core.spark``.
"""

__version__ = "0.1.0"
