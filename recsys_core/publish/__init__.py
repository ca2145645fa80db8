"""Publish the ``recommendations`` table: Parquet partition swap, SQL copy, retention.

``run_publish`` (in ``publish.py``) is the whole step; ``open_sink`` (in ``sql.py``) picks
the SQL backend from a URL (``sqlite:///…`` or ``postgresql://…``).
"""
