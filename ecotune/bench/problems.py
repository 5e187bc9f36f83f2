"""Standard multi-fidelity problems, written by others, with token-like costs.

Every problem maps the benchmark's fidelity (an instance count ``r`` in ``[r_min, r_max]``)
onto the problem's own fidelity and charges ``T = α·r + β`` tokens (or the problem's own
cost where it carries one). Scores are maximised; a function value ``f`` (minimised) becomes
``(f_med − f) / (f_med − f_opt)``: 1 at the known optimum, 0 at the median of the domain.

Two kinds, because an LLM's fidelity is of the second kind and a fair suite needs both:

* **biased** lower fidelities (a cheaper, systematically different function):
  BoTorch's ``AugmentedBranin`` and ``AugmentedHartmann`` (fidelity ``s = r / r_max``),
  BoTorch's ``BoreholeMultiFidelity`` and ``WingWeightMultiFidelity`` (discrete fidelity
  levels that carry their own costs: ``r`` picks the most expensive level whose share of
  ``r_max`` it reaches), and the ``mf2`` bi-fidelity suite (Currin, Park91a, Borehole,
  Hartmann6; ``f_r = f_low + w_r·(f_high − f_low)`` with ``w_r`` rising linearly from 0 at
  ``r_min`` to 1 at ``r_max``);
* **unbiased, noisier** lower fidelities, the "noisy prefix" family: instance ``i`` of a
  config is a Bernoulli draw from ``p_i(θ) = σ(3·g(θ) − d_i)`` where ``g`` is a standard
  test function's normalised score and ``d_i`` the instance's difficulty; the score at ``r``
  is the mean over the first ``r`` instances (common random numbers, so prefixes nest), and
  each instance costs its prompt plus a completion that grows with ``θ_0``.

The true score of a config is its full-fidelity score (for the noisy family: the expected
score over all instances). The optimum is known for the BoTorch functions and estimated by
dense random search for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecotune.space import SearchSpace
from ecotune.trial import NOTHING_FIT, Trial, TrialResult, TrialStatus

#: tokens per unit of fidelity and per trial for the function problems
ALPHA, BETA = 40, 100


def unit_space(dim: int) -> SearchSpace:
    """``x0 .. x{d-1}`` in [0, 1] (each problem scales them onto its own box)."""
    return SearchSpace.from_dict({f"x{j}": {"type": "float", "low": 0.0, "high": 1.0}
                                  for j in range(dim)})


@dataclass
class Problem:
    """A multi-fidelity problem on the unit cube.

    Attributes:
        name: short name (``branin``, ``noisy-hartmann``, …).
        kind: ``biased`` or ``unbiased`` lower fidelities.
        dim: number of design variables.
        value: ``value(U, r) -> scores`` for points ``U`` (n, dim) at fidelity r (functions).
        cost: ``cost(U, r) -> tokens`` of one evaluation.
        r_min, r_max: the fidelity range.
        optimum: the best full-fidelity score (known or a close lower bound).
    """

    name: str
    kind: str
    dim: int
    value: Callable[[np.ndarray, int], np.ndarray]
    cost: Callable[[np.ndarray, int], np.ndarray]
    r_min: int
    r_max: int
    optimum: float
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> SearchSpace:
        return unit_space(self.dim)

    def point(self, config: dict[str, Any]) -> np.ndarray:
        return np.array([[float(config[f"x{j}"]) for j in range(self.dim)]])

    def true_score(self, config: dict[str, Any] | None) -> float:
        if config is None:
            return float("nan")
        return float(self.value(self.point(config), self.r_max)[0])


def _normaliser(f_full: Callable[[np.ndarray], np.ndarray], dim: int, f_opt: float | None,
                seed: int = 0) -> tuple[float, float]:
    """``(f_med, f_opt)`` from 4096 Sobol points (``f_opt`` estimated when unknown)."""
    from scipy.stats import qmc

    vals = f_full(qmc.Sobol(dim, scramble=True, seed=seed).random_base2(12))
    return float(np.median(vals)), float(np.min(vals) if f_opt is None else f_opt)


def _function_problem(name: str, source: str, dim: int, f: Callable[[np.ndarray, float], np.ndarray],
                      f_opt: float | None, r_min: int = 5, r_max: int = 100) -> Problem:
    """A function ``f(U, w)`` with fidelity weight ``w = (r − r_min)/(r_max − r_min)`` or
    ``s = r / r_max`` (whichever ``f`` expects), minimised."""
    med, opt = _normaliser(lambda U: f(U, 1.0), dim, f_opt)
    scale = med - opt

    def value(U: np.ndarray, r: int) -> np.ndarray:
        return (med - f(U, _weight(name, r, r_min, r_max))) / scale

    def cost(U: np.ndarray, r: int) -> np.ndarray:
        return np.full(len(U), ALPHA * r + BETA)

    best = 1.0 if f_opt is not None else float(value(_dense(dim), r_max).max())
    return Problem(name, "biased", dim, value, cost, r_min, r_max, best, source)


def _weight(name: str, r: int, r_min: int, r_max: int) -> float:
    if name in ("branin", "hartmann"):  # BoTorch's augmented fidelity s in [0, 1]
        return r / r_max
    return (r - r_min) / max(r_max - r_min, 1)


def _dense(dim: int, n: int = 1 << 15) -> np.ndarray:
    return np.random.default_rng(12345).random((n, dim))


def _botorch(cls_name: str) -> tuple[Any, np.ndarray]:
    import botorch.test_functions.multi_fidelity as mf

    fn = getattr(mf, cls_name)()
    return fn, np.array(fn._bounds, dtype=float)


def _augmented(cls_name: str, name: str) -> Problem:
    import torch

    fn, bounds = _botorch(cls_name)
    dim = len(bounds) - 1
    lo, hi = bounds[:dim, 0], bounds[:dim, 1]

    def f(U: np.ndarray, s: float) -> np.ndarray:
        X = np.hstack([lo + U * (hi - lo), np.full((len(U), 1), s)])
        with torch.no_grad():
            return fn.evaluate_true(torch.tensor(X, dtype=torch.float64)).numpy()

    return _function_problem(name, f"botorch.test_functions.multi_fidelity.{cls_name}", dim, f,
                             float(fn._optimal_value))


def _levels(cls_name: str, name: str, levels: list[int], r_max: int = 100) -> Problem:
    """Discrete fidelity levels (most expensive first) with the problem's own costs."""
    import torch

    fn, bounds = _botorch(cls_name)
    dim = len(bounds) - 1
    lo, hi = bounds[:dim, 0], bounds[:dim, 1]
    costs = [float(fn.cost(torch.tensor([[0.0] * dim + [lv]]))[0]) for lv in levels]
    top = max(costs)
    reach = [max(1, round(r_max * c / top)) for c in costs]  # the r a level needs

    def level_of(r: int) -> int:
        ok = [j for j, need in enumerate(reach) if r >= need]
        return min(ok, key=lambda j: -costs[j]) if ok else len(levels) - 1

    def raw(U: np.ndarray, lv: int) -> np.ndarray:
        X = np.hstack([lo + U * (hi - lo), np.full((len(U), 1), float(lv))])
        with torch.no_grad():
            return fn.evaluate_true(torch.tensor(X, dtype=torch.float64)).numpy()

    med, opt = _normaliser(lambda U: raw(U, levels[0]), dim, float(fn._optimal_value))

    def value(U: np.ndarray, r: int) -> np.ndarray:
        return (med - raw(U, levels[level_of(r)])) / (med - opt)

    def cost(U: np.ndarray, r: int) -> np.ndarray:
        return np.full(len(U), ALPHA * r_max * costs[level_of(r)] / top + BETA)

    return Problem(name, "biased", dim, value, cost, min(reach), r_max, 1.0,
                   f"botorch.test_functions.multi_fidelity.{cls_name}",
                   {"levels": levels, "costs": costs, "reach": reach})


def _mf2(fn_name: str) -> Problem:
    import mf2

    fn = getattr(mf2, fn_name)
    lo, hi = np.asarray(fn.l_bound, float), np.asarray(fn.u_bound, float)

    def f(U: np.ndarray, w: float) -> np.ndarray:
        X = lo + U * (hi - lo)
        low, high = np.asarray(fn.low(X), float), np.asarray(fn.high(X), float)
        return low + w * (high - low)

    return _function_problem(f"mf2-{fn_name}", f"mf2.{fn_name} (2022.6.0)", fn.ndim, f, None)


def noisy_prefix(base: str, n_instances: int = 200, seed: int = 0) -> Problem:
    """The noisy-prefix problem over a standard function's normalised score ``g``."""
    inner = PROBLEMS[base]()
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, n_instances)
    u = rng.random(n_instances)
    prompt = rng.integers(30, 60, n_instances)

    def probs(U: np.ndarray) -> np.ndarray:
        g = np.clip(inner.value(U, inner.r_max), -2.0, 1.0)
        return 1.0 / (1.0 + np.exp(-(3.0 * g[:, None] - difficulty[None, :])))

    def value(U: np.ndarray, r: int) -> np.ndarray:
        if r >= n_instances:  # the true score: expected over every instance
            return probs(U).mean(axis=1)
        return (u[None, :r] < probs(U)[:, :r]).mean(axis=1)

    def per_instance(U: np.ndarray) -> np.ndarray:
        return prompt[None, :] + np.rint(4 + 30 * U[:, :1]).astype(int)

    def cost(U: np.ndarray, r: int) -> np.ndarray:
        return per_instance(U)[:, :r].sum(axis=1)

    best = float(probs(_dense(inner.dim, 1 << 13)).mean(axis=1).max())
    return Problem(f"noisy-{base}", "unbiased", inner.dim, value, cost, 5, n_instances, best,
                   f"Bernoulli instances over {inner.source}",
                   {"u": u, "probs": probs, "per_instance": per_instance})


#: every standard problem of the suite, by name
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "branin": lambda: _augmented("AugmentedBranin", "branin"),
    "hartmann": lambda: _augmented("AugmentedHartmann", "hartmann"),
    "borehole": lambda: _levels("BoreholeMultiFidelity", "borehole", [0, 1, 2]),
    "wingweight": lambda: _levels("WingWeightMultiFidelity", "wingweight", [0, 1, 2, 3]),
    "mf2-currin": lambda: _mf2("currin"),
    "mf2-park91a": lambda: _mf2("park91a"),
    "mf2-borehole": lambda: _mf2("borehole"),
    "mf2-hartmann6": lambda: _mf2("hartmann6"),
    "noisy-branin": lambda: noisy_prefix("branin"),
    "noisy-hartmann": lambda: noisy_prefix("hartmann"),
}


class ProblemEvaluator:
    """Answers trials on a :class:`Problem` within their ``token_limit``.

    A function problem evaluates once at the trial's fidelity; when that does not fit the
    limit, at the largest fidelity that does (status ``partial``). A noisy-prefix problem
    scans instances in order like the trial runner: it stops before an instance that would
    pass the limit, keeps what earlier trials of the same config measured, and honours
    ``prune_below``.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.measured: dict[tuple[float, ...], int] = {}

    def evaluate(self, trial: Trial) -> TrialResult:
        pb = self.problem
        U = pb.point(trial.config)
        if pb.kind == "unbiased":
            return self._scan(trial, U)
        r = int(trial.fidelity)
        while r >= pb.r_min and pb.cost(U, r)[0] > trial.token_limit:
            r -= 1
        if r < pb.r_min:
            return TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                               status=TrialStatus.FAILED, error=NOTHING_FIT)
        status = TrialStatus.COMPLETE if r == trial.fidelity else TrialStatus.PARTIAL
        return TrialResult(score=float(pb.value(U, r)[0]), prompt_tokens=int(pb.cost(U, r)[0]),
                           completion_tokens=0, n_evaluated=r, status=status)

    def _scan(self, trial: Trial, U: np.ndarray) -> TrialResult:
        from ecotune.bench.replay import scan_prefix

        pb = self.problem
        hits = (pb.meta["u"] < pb.meta["probs"](U)[0]).astype(float)
        costs = pb.meta["per_instance"](U)[0]
        key = tuple(np.round(U[0], 12))
        known = self.measured.get(key, 0)
        res = scan_prefix(trial, lambda i: (hits[i], int(costs[i]), 0, int(costs[i])),
                          len(hits), known, [str(i) for i in range(len(hits))])
        self.measured[key] = max(known, res.n_evaluated)
        return res
