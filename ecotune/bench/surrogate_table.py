"""Surrogate mode (YAHPO Gym / JAHS-Bench style): a model of a recorded table that answers
any config, not only the recorded ones.

Nearest-neighbour mapping tells an optimizer the score of a config that did not run. Here
a model of ``P(correct | config, instance)`` is fitted on the table instead: gradient-boosted
trees (scikit-learn's ``HistGradientBoostingClassifier``) over the encoded config and the
instance's features (its difficulty, the mean correctness over the training configs, and
its prompt length); a second model predicts completion tokens per instance. A trial at a
config draws each instance's outcome as ``u_i < P(correct)`` with one fixed uniform per
instance (common random numbers, so prefixes nest and configs are compared on the same
draws) and is charged the recorded prompt tokens (the same few-shot count gives the same
prompt) plus the predicted completion tokens.

The model is checked before use: :func:`cross_validate` fits it on 4/5 of the table's
configs and reports the Spearman rank correlation between predicted and recorded full-table
scores of the held-out fifth (the figure YAHPO reports for its surrogates).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ecotune.bench.replay import Table, scan_prefix
from ecotune.trial import Trial, TrialResult


class TableSurrogate:
    """``P(correct)`` and completion tokens of any config on a table's instances.

    Args:
        table: the recorded table.
        configs: indices of the table configs to fit on (default: all).
        seed: seeds the model and the instances' uniforms.
    """

    def __init__(self, table: Table, configs: np.ndarray | None = None, seed: int = 0):
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        self.table = table
        ks = np.arange(table.n_configs) if configs is None else np.asarray(configs)
        difficulty = table.scores[ks].mean(axis=0)
        self.inst = np.column_stack([difficulty, table.prompt_tokens[ks].mean(axis=0)])
        X, y, t = self._rows(ks)
        with threadpool_limits(1):  # small data: OpenMP threads only contend
            self.clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1,
                                                      random_state=seed).fit(X, y > 0.5)
            self.reg = HistGradientBoostingRegressor(max_iter=100, random_state=seed).fit(X, t)
        self.u = np.random.default_rng(seed).random(table.n_instances)

    def _features(self, x: np.ndarray) -> np.ndarray:
        n = self.table.n_instances
        return np.column_stack([np.repeat(x[None, :], n, axis=0), self.inst])

    def _rows(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = np.vstack([self._features(self.table.X[k]) for k in ks])
        return X, self.table.scores[ks].reshape(-1), self.table.completion_tokens[ks].reshape(-1)

    def probs(self, config: dict[str, Any]) -> np.ndarray:
        """P(correct) of ``config`` on every instance."""
        with threadpool_limits(1):
            return self.clf.predict_proba(self._features(self.table.space.encode(config)))[:, 1]

    def completion_tokens(self, config: dict[str, Any]) -> np.ndarray:
        """Predicted completion tokens on every instance (at least 1, at most max_tokens)."""
        with threadpool_limits(1):
            t = self.reg.predict(self._features(self.table.space.encode(config)))
        cap = int(config.get("max_tokens", max(1, int(t.max()))))
        return np.clip(np.rint(t), 1, cap).astype(int)

    def prompt_tokens(self, config: dict[str, Any]) -> np.ndarray:
        """Prompt tokens on every instance: exact from a recorded config with the same
        few-shot count (the prompt depends on nothing else), else the table's mean."""
        shots = config.get("few_shot")
        same = [k for k, c in enumerate(self.table.configs) if c.get("few_shot") == shots]
        rows = self.table.prompt_tokens[same[0]] if same else self.table.prompt_tokens.mean(0)
        return np.asarray(rows).astype(int)

    def true_score(self, config: dict[str, Any] | None) -> float:
        """The expected score over the held-out instances (``table.held_out_from`` on)."""
        if config is None:
            return float("nan")
        return float(self.probs(config)[self.table.held_out_from:].mean())


class SurrogateEvaluator:
    """Answers trials at any config from a :class:`TableSurrogate`, within the token limit,
    keeping what earlier trials of the same config measured (like the trial runner)."""

    def __init__(self, surrogate: TableSurrogate):
        self.sur = surrogate
        self.measured: dict[str, int] = {}

    def evaluate(self, trial: Trial) -> TrialResult:
        import json

        sur, tb = self.sur, self.sur.table
        hits = (sur.u < sur.probs(trial.config)).astype(float)
        comp = sur.completion_tokens(trial.config)
        worst = int(trial.config.get("max_tokens", int(comp.max())))
        key = json.dumps(trial.config, sort_keys=True, default=str)
        known = self.measured.get(key, 0)
        prompt = sur.prompt_tokens(trial.config)
        res = scan_prefix(trial, lambda i: (hits[i], int(prompt[i]), int(comp[i]), worst),
                          tb.n_instances, known, tb.instance_ids)
        self.measured[key] = max(known, res.n_evaluated)
        return res


def cross_validate(table: Table, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Spearman correlation of predicted vs recorded full-table scores on held-out configs
    (``folds``-fold over configs); also the mean absolute error of those scores."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    idx = rng.permutation(table.n_configs)
    pred = np.zeros(table.n_configs)
    for f in range(folds):
        test = idx[f::folds]
        train = np.setdiff1d(idx, test)
        sur = TableSurrogate(table, train, seed=seed)
        for k in test:
            pred[k] = sur.probs(table.configs[k]).mean()
    truth = table.scores.mean(axis=1)
    return {"spearman": float(spearmanr(pred, truth)[0]),
            "mae": float(np.abs(pred - truth).mean()), "configs": int(table.n_configs)}
