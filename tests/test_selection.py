"""How the training run chooses: the margin rule of its searches (recsys_core.training.selection)
and its early-stopping patience."""

from __future__ import annotations

import numpy as np

from recsys_core.training.selection import Selection, wins


def test_a_challenger_wins_only_by_more_than_its_standard_error():
    rng = np.random.default_rng(0)
    held = rng.random(300)
    noise = held + rng.normal(0, 0.05, 300)  # same mean, noisy: a plain max would take it half the time
    noise += 0.2 * 0.05 / np.sqrt(300) - (noise - held).mean()  # ahead by 0.2 standard errors
    assert noise.mean() > held.mean() and not wins(noise, held)
    better = held + 0.02 + rng.normal(0, 0.05, 300)  # ahead by ~7 standard errors
    assert wins(better, held)
    with_nan = better.copy()
    with_nan[:10] = np.nan  # users without relevant films are left out of the pair
    assert wins(with_nan, held) and not wins(np.full(300, np.nan), held)


def test_selection_keeps_the_first_setting_unless_clearly_beaten():
    rng = np.random.default_rng(1)
    base = rng.random(500)
    pick = Selection()
    assert pick.offer("default", {"ndcg@10": base.mean()}, base)
    tie = base + rng.normal(0, 0.01, 500)
    tie -= (tie - base).mean()  # equal mean
    assert not pick.offer("noise", {"ndcg@10": tie.mean()}, tie) and pick.best == "default"
    assert pick.offer("better", {"ndcg@10": base.mean() + 0.05}, base + 0.05) and pick.best == "better"


def test_patience_is_a_number_of_steps_counted_in_whole_epochs():
    from recsys_core.training.config import patience_epochs

    assert patience_epochs(100, 5, 3) == 20  # small data: the patience tuned there
    assert patience_epochs(100, 341 / 68, 3) == 20  # 341 users in batches of 68: 5.01 steps, not 6
    assert patience_epochs(100, 276.6, 3) == 3  # the full release: a few epochs, not 20
    assert patience_epochs(100, 30, 3) == 4
