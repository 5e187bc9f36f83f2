"""A parametric multi-fidelity landscape with token costs and a known optimum.

It imitates what was measured with a real small model on a short generative task: accuracy
peaks at low temperature with moderate nucleus truncation, collapses when ``max_tokens`` is
too small to hold the answer, and completions run long (costing tokens) when the model
rambles at high temperature with a large ``max_tokens``. Each instance has a difficulty
and a fixed uniform draw (common random numbers), so the score on the first r instances is
a consistent, nested noisy estimate of the full-fidelity score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecotune.decoding import SamplingParams
from ecotune.evaluator import fits
from ecotune.space import SearchSpace, default_llm_space
from ecotune.trial import NOTHING_FIT, Trial, TrialResult, TrialStatus

ANSWER_TOKENS = 6


def synthetic_space() -> SearchSpace:
    return default_llm_space(max_tokens=(1, 256), few_shot=5)


class SyntheticLandscape:
    """Per-instance success probabilities and token costs of a config.

    Args:
        n_instances: size of the instance pool (r_max at most this).
        seed: draws the instances' difficulties, prompt lengths and uniforms.
    """

    def __init__(self, n_instances: int = 200, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n = n_instances
        self.difficulty = rng.normal(0.0, 1.0, n_instances)
        self.u = rng.random(n_instances)
        self.prompt_base = rng.integers(30, 60, n_instances)
        self.ramble = rng.random(n_instances)

    def logit(self, c: dict[str, Any]) -> float:
        t, top_p = float(c.get("temperature", 0.0)), float(c.get("top_p", 1.0))
        min_p, rep = float(c.get("min_p", 0.0)), float(c.get("repetition_penalty", 1.0))
        shots = float(c.get("few_shot", 3))
        top_k = float(c.get("top_k", 100))
        noise_temp = t * (0.4 + 0.6 * top_p) * (1.0 - 1.5 * min_p)  # effective randomness
        q = 1.4 - 8.0 * (noise_temp - 0.22) ** 2 - 14.0 * (rep - 1.12) ** 2
        q -= 0.12 * (shots - 2.0) ** 2 + 0.4 * (np.log10(top_k) - 1.4) ** 2
        q -= 1.2 * abs(float(c.get("length_penalty", 1.0)) - 1.0)
        return float(q)

    def probs(self, c: dict[str, Any]) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(self.logit(c) - self.difficulty)))
        if int(c.get("max_tokens", 16)) < ANSWER_TOKENS:  # the answer is cut off
            p = p * 0.02
        return p

    def completion_tokens(self, c: dict[str, Any]) -> np.ndarray:
        t = float(c.get("temperature", 0.0))
        natural = ANSWER_TOKENS + self.ramble * (8 + 120 * t * float(c.get("top_p", 1.0)))
        return np.minimum(np.ceil(natural), int(c.get("max_tokens", 16))).astype(int)

    def prompt_tokens(self, c: dict[str, Any]) -> np.ndarray:
        return self.prompt_base + 28 * int(c.get("few_shot", 3))

    def true_score(self, c: dict[str, Any], r: int | None = None) -> float:
        """Expected score over the first r instances (all by default)."""
        return float(self.probs(c)[: r or self.n].mean())

    def optimum(self, space: SearchSpace, n: int = 20000, seed: int = 0) -> float:
        """Best true score found by dense random search (a close lower bound)."""
        rng = np.random.default_rng(seed)
        return max(self.true_score(c) for c in space.sample(rng, n))


class SyntheticEvaluator:
    """Runs trials on the landscape, honouring ``token_limit`` like a real runner."""

    def __init__(self, landscape: SyntheticLandscape):
        self.land = landscape

    def evaluate(self, trial: Trial) -> TrialResult:
        c = trial.config
        sp = SamplingParams.from_config(c)
        hits = (self.land.u < self.land.probs(c)).astype(float)
        prompt, comp = self.land.prompt_tokens(c), self.land.completion_tokens(c)
        spent = n = p_tot = c_tot = 0
        scores = []
        for i in range(min(trial.fidelity, self.land.n)):
            if not fits(spent, int(prompt[i]), sp.worst_case_completion_tokens(), trial.token_limit):
                break
            p_tot += int(prompt[i])
            c_tot += int(comp[i])
            spent = p_tot + c_tot
            scores.append(float(hits[i]))
            n += 1
        status = TrialStatus.COMPLETE if n == trial.fidelity else TrialStatus.PARTIAL
        return TrialResult(score=float(np.mean(scores)) if scores else None,
                           prompt_tokens=p_tot, completion_tokens=c_tot, n_evaluated=n,
                           status=status if scores else TrialStatus.FAILED,
                           instance_ids=[str(i) for i in range(n)], instance_scores=scores,
                           error=None if scores else NOTHING_FIT)
