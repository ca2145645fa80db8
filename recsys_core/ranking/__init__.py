"""Ranking, shared by training (validation), scoring, the quality gate and the evaluation:
the one top-N of unseen films (``top_n``), the one temporal holdout (``holdout``) and the
top-N metrics (``metrics``). It sits below all of them and imports none of them."""
