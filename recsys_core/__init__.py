"""recsys_core: the library behind the nightly MovieLens recommender.

Nothing in this package imports Airflow; Spark is imported only by ``recsys_core.spark``.
Importing the package pins MKL's numerics (``recsys_core.reproducible``) so that training
and scoring the same inputs twice give the same bits.
"""

from recsys_core.reproducible import pin_mkl_numerics

pin_mkl_numerics()

__version__ = "0.1.0"
