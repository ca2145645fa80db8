"""Offline evaluation: temporal holdout split, top-N metrics, baselines, the report.

``recsys evaluate`` runs the project's own prep, training and scoring on the training part
of a split and compares the model with popularity, EASE, item-kNN and Spark ALS on the
same held-out ratings (``run.run_evaluation``). The split, top-N and metrics come from
``recsys_core.ranking``, the same code the nightly validation and the scoring job use.
"""
