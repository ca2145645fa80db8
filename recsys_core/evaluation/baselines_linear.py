"""The EASE family of baselines: EASE, EDLAE, DLAE and their recency-weighted variants.

All are linear item-item autoencoders ``scores = X_u B`` with a closed form built on one
precision matrix ``P = (X^T X + Lambda)^-1`` of the binary users x films matrix ``X``
(all ratings or only the liked ones: the ``feedback`` parameter), with a diagonal penalty

    Lambda = lambda I + p / (1 - p) * diagMat(diag(X^T X))

(Steck 2020, "Autoencoders that don't overfit towards the identity", NeurIPS: the
penalty that dropout of rate ``p`` on the input induces, the emphasis on the dropped
entries in the limit). Two closed forms:

- with the zero-diagonal constraint (EASE, Steck 2019, for ``p = 0``; EDLAE for ``p > 0``):
  ``B = I - P diagMat(1 / diag(P))``;
- without it (DLAE, the "full-rank" model of the same paper): ``B = (X^T X + Lambda)^-1 X^T X
  = I - P Lambda``.

Neither needs ``B`` itself: the scores are ``X_u - (X_u P) / diag(P)`` and
``X_u - (X_u P) Lambda``. ``PrecisionSolver`` and ``Precision`` are the one place of this
algebra: the primal inverse (``recsys_core.models.ease``'s Gram and precision matrix) when
there are at least as many users as films, otherwise the Woodbury identity
``P = D^-1 - D^-1 X^T (I + X D^-1 X^T)^-1 X D^-1`` (``D = Lambda``) with a users x users
Cholesky factor.

Recency weighting (the ``half_life`` parameter, in ratings): at scoring time the input row
``X_u`` is weighted toward the user's latest ratings, ``0.5 ** (age / half_life)`` where
``age`` is the rating's position counted back from the user's latest rating in the user's
own rating order (timestamp, then movieId; the latest has age 0 and weight 1); ``B`` is
fitted on binary ``X`` as usual. ``half_life = inf`` is the unweighted model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.data.csr import LIKED_RATING, RatingsCSR, gather_entries
from recsys_core.data.recency import rating_ages, recency_weights
from recsys_core.evaluation.baselines import FEEDBACK, Baseline, Scorer, feedback
from recsys_core.models.ease import dropout_penalty, gram, precision_matrix

LAMBDAS = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)  # EASE's grid
EDLAE_LAMBDAS = (10.0, 50.0, 200.0, 800.0)  # the dropout penalty carries most of the weight
DROPOUTS = (0.0, 0.1, 0.25, 0.5)
HALF_LIVES = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, math.inf)  # in ratings; inf: no decay


@dataclass(frozen=True)
class Precision:
    """``P = (X^T X + diagMat(d))^-1`` for one penalty ``d``, ready to apply to rows.

    ``d`` and ``diag`` (= diag(P)) are (n_films,) float64. Dual form: ``a`` = X D^-1 and
    ``w`` = (I + X D^-1 X^T)^-1 X D^-1, both (users, n_films); primal: ``p`` = P itself.
    """

    d: torch.Tensor
    diag: torch.Tensor
    a: torch.Tensor | None = None
    w: torch.Tensor | None = None
    p: torch.Tensor | None = None

    def apply(self, xu: torch.Tensor) -> torch.Tensor:
        """(rows, n_films) ``xu @ P`` of (rows, n_films) float64 input rows."""
        if self.p is not None:
            return xu @ self.p
        return xu / self.d - (xu @ self.a.T) @ self.w


class PrecisionSolver:
    """Solves ``P = (X^T X + diagMat(d))^-1`` of one binary users x films matrix for any penalty.

    ``data``: the feedback CSR (its entries are the ones of ``X``). Dual form (Woodbury
    identity, a users x users Cholesky factor: O(users^2 films) per penalty, three dense
    users x films float64 matrices) when users < films; otherwise primal (``models.ease``'s
    ``gram``, kept, and ``precision_matrix``: O(films^3), two films x films matrices).
    """

    def __init__(self, data: RatingsCSR):
        self.dual = data.n_users < data.n_films
        if self.dual:
            self.x = data.dense(np.arange(data.n_users), torch.float64)  # (users, films)
            self.counts = self.x.sum(dim=0)  # diag(X^T X)
        else:
            self.gram = gram(data)  # (films, films) float32
            self.counts = torch.diagonal(self.gram).to(torch.float64)

    def solve(self, d: torch.Tensor) -> Precision:
        """``P`` for the (n_films,) float64 penalty ``d`` > 0. Raises torch.linalg.LinAlgError
        if the system is singular."""
        if self.dual:
            a = self.x / d  # X D^-1
            k = a @ self.x.T
            k.diagonal().add_(1.0)  # I + X D^-1 X^T: symmetric positive definite
            w = torch.cholesky_solve(a, torch.linalg.cholesky(k))
            return Precision(d, 1.0 / d - (a * w).sum(dim=0), a=a, w=w)
        g = self.gram.to(torch.float64)  # a copy: the kept Gram stays
        g.diagonal().add_(d - d.min())
        p = precision_matrix(g, float(d.min()), torch.float64)
        return Precision(d, torch.diagonal(p).clone(), p=p)


class LinearAutoencoder(Baseline):
    """EASE / EDLAE (``constrained``) or DLAE, optionally recency-weighted at scoring time.

    Tuned on the inner split by ``run_baseline`` in two stages (a coordinate search): the
    ``grid()`` of ``feedback`` x ``lambda`` x ``p`` (dropout) without decay, then
    (``refine``) the half-lives (in ratings) around each feedback's best point. Formulas:
    the module docstring. Scores are (rows, n_films) float32.
    """

    def __init__(self, name: str, constrained: bool = True, lambdas: tuple[float, ...] = LAMBDAS,
                 dropouts: tuple[float, ...] = (0.0,), half_lives: tuple[float, ...] = (math.inf,),
                 feedback: tuple[str, ...] = FEEDBACK):  # fmt: skip
        self.name, self.constrained = name, constrained
        self.lambdas, self.dropouts, self.half_lives, self.feedbacks = lambdas, dropouts, half_lives, feedback
        self._solvers: dict[tuple[int, str], PrecisionSolver] = {}
        self._solved: tuple[tuple, Precision] | None = None  # the last solve: ((data id, feedback, lambda, p), P)
        self._ages: tuple[int, np.ndarray] | None = None

    def _point(self, kind: str, lam: float, p: float, half_life: float) -> dict:
        """A grid point: ``p`` only when dropout is tuned, ``half_life`` only when decay is."""
        params = {"feedback": kind, "lambda": float(lam)}
        if tuple(self.dropouts) != (0.0,):
            params["p"] = float(p)
        if tuple(self.half_lives) != (math.inf,):
            params["half_life"] = float(half_life)
        return params

    def grid(self) -> list[dict]:
        """``feedback`` x ``lambda`` x ``p`` at the longest half-life (inf: no decay); the other
        half-lives come in ``refine``."""
        h = max(self.half_lives)
        return [self._point(f, lam, p, h) for f in self.feedbacks for lam in self.lambdas for p in self.dropouts]

    def refine(self, scored: list[tuple[dict, float]]) -> list[dict]:
        """Per feedback: every half-life at the best (lambda, p) of the first stage and at its
        neighbouring lambdas of the grid (the best lambda shifts with the decay); none when
        the decay is not tuned. ``half_life`` is innermost so one solve serves it all."""
        if len(self.half_lives) < 2:
            return []
        lambdas = sorted(float(lam) for lam in self.lambdas)
        out = []
        for kind in self.feedbacks:
            mine = [(params, value) for params, value in scored if params["feedback"] == kind]
            if not mine:
                continue
            best = max(mine, key=lambda point: point[1])[0]
            at = lambdas.index(best["lambda"])
            for lam in lambdas[max(0, at - 1) : at + 2]:
                out += [self._point(kind, lam, best.get("p", 0.0), h) for h in sorted(self.half_lives)]
        return out

    def _solver(self, data: RatingsCSR, kind: str) -> PrecisionSolver:
        if not any(key[0] == id(data) for key in self._solvers):
            self._solvers.clear()  # a new training matrix: drop the previous one's solvers
            self._solved = None
        key = (id(data), kind)
        if key not in self._solvers:
            self._solvers[key] = PrecisionSolver(feedback(data, kind))
        return self._solvers[key]

    def _weights(self, data: RatingsCSR, kind: str, half_life: float) -> np.ndarray | None:
        """(nnz of the feedback CSR,) weights of its entries, None when unweighted."""
        if math.isinf(half_life):
            return None
        if len(data.timestamps) and not data.timestamps.any():
            raise ValueError("recency weighting needs the ratings' timestamps (every one is 0)")
        if self._ages is None or self._ages[0] != id(data):
            self._ages = (id(data), rating_ages(data))
        ages = self._ages[1] if kind == "all" else self._ages[1][data.ratings >= LIKED_RATING]
        return recency_weights(ages, half_life)

    def fit(self, data: RatingsCSR, params: dict) -> Scorer:
        """A scorer of ``data``'s users for ``params`` (keys of ``grid()``). Raises ValueError
        for a lambda <= 0, p outside [0, 1), half_life <= 0, or a finite half-life on
        ratings without timestamps."""
        kind, lam, p = params.get("feedback", "all"), params["lambda"], params.get("p", 0.0)
        half_life = params.get("half_life", math.inf)
        solver = self._solver(data, kind)
        key = (id(data), kind, lam, p)
        if self._solved is None or self._solved[0] != key:
            self._solved = (key, solver.solve(dropout_penalty(solver.counts, lam, p)))
        prec, constrained = self._solved[1], self.constrained
        rows_data = feedback(data, kind)
        weights = self._weights(data, kind, half_life)

        def scores(rows: np.ndarray) -> np.ndarray:
            xu = rows_data.dense(rows, torch.float64)
            if weights is not None:
                positions, counts = gather_entries(rows_data.indptr, np.asarray(rows, dtype=np.int64))
                at = torch.from_numpy(np.repeat(np.arange(len(rows)), counts))
                xu[at, torch.from_numpy(rows_data.indices[positions])] = torch.from_numpy(weights[positions])
            xp = prec.apply(xu)
            return (xu - (xp / prec.diag if constrained else xp * prec.d)).float().numpy()

        return scores

    def close(self) -> None:
        self._solvers.clear()
        self._solved, self._ages = None, None


class EASE(LinearAutoencoder):
    """EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"):
    ``B = I - P diagMat(1 / diag(P))``, ``P = (X^T X + lambda I)^-1`` on binary X; lambda and
    feedback tuned. The same model as ``LinearAutoencoder`` with ``p = 0``, no decay."""

    def __init__(self, lambdas: tuple[float, ...] = LAMBDAS, feedback: tuple[str, ...] = FEEDBACK):
        super().__init__("ease", lambdas=lambdas, feedback=feedback)


def edlae(lambdas: tuple[float, ...] = EDLAE_LAMBDAS, dropouts: tuple[float, ...] = DROPOUTS,
          feedback: tuple[str, ...] = FEEDBACK, half_lives: tuple[float, ...] = (math.inf,),
          name: str = "edlae") -> LinearAutoencoder:  # fmt: skip
    """EDLAE (Steck 2020): EASE's zero-diagonal closed form with the dropout-emphasis penalty
    ``lambda I + p / (1 - p) diagMat(X^T X)``; p = 0 (EASE) is in the default grid."""
    return LinearAutoencoder(name, True, lambdas, dropouts, half_lives, feedback)


def dlae(lambdas: tuple[float, ...] = EDLAE_LAMBDAS, dropouts: tuple[float, ...] = DROPOUTS,
         feedback: tuple[str, ...] = FEEDBACK) -> LinearAutoencoder:  # fmt: skip
    """DLAE (Steck 2020): the same penalty without the diagonal constraint,
    ``B = (X^T X + Lambda)^-1 X^T X``."""
    return LinearAutoencoder("dlae", False, lambdas, dropouts, (math.inf,), feedback)


def ease_recency(lambdas: tuple[float, ...] = LAMBDAS, half_lives: tuple[float, ...] = HALF_LIVES,
                 feedback: tuple[str, ...] = FEEDBACK) -> LinearAutoencoder:  # fmt: skip
    """EASE scored on recency-weighted input rows (module docstring); half-life tuned, inf in the grid."""
    return LinearAutoencoder("ease_recency", True, lambdas, (0.0,), half_lives, feedback)


def edlae_recency(lambdas: tuple[float, ...] = EDLAE_LAMBDAS, dropouts: tuple[float, ...] = DROPOUTS,
                  half_lives: tuple[float, ...] = HALF_LIVES, feedback: tuple[str, ...] = FEEDBACK) -> LinearAutoencoder:  # fmt: skip
    """EDLAE scored on recency-weighted input rows; lambda, p and half-life tuned jointly."""
    return LinearAutoencoder("edlae_recency", True, lambdas, dropouts, half_lives, feedback)
