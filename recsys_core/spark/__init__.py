"""Spark DataFrame transforms for the prep jobs. Imported only where Spark runs."""
