"""Replay recorded evaluation tables: an evaluator that costs no engine time.

This is the simulator-backend idea of Syne Tune: a table of config × instance outcomes,
recorded once with a real engine (``ecotune.bench.collect``), answers every trial of every
optimizer, so methods are compared over many seeds on the same recorded outcomes.

Mapping a proposed config to the table: optimizers propose arbitrary points, the table
holds K configs. :class:`ReplayEvaluator` answers a trial with the table config *nearest in
the encoded space* (``SearchSpace.encode``, Euclidean in ``[0, 1]^d``), the standard
compromise of tabular benchmarks. The incumbent an optimizer returns is scored the same
way: its *true* score is the full-table mean of its nearest recorded config. So the
achievable optimum is the best table config, and a method gains nothing from proposing
points between table configs beyond which config they land nearest to (the report gives
how many distinct table configs each method reached and the mean mapping distance).

Accounting is exact and the same as the trial runner's: a trial at fidelity r scans the
first r instances of the nested order and is charged exactly the recorded
``prompt_tokens + completion_tokens`` of each instance it evaluates, except instances an
earlier trial of the same table config already measured (nested subsets: they are kept,
and reported as reused, as the runner keeps them). It stops *before* an instance whose
worst case (recorded prompt tokens + ``max_tokens`` × n of the table config, which bounds
the recorded completion) would pass the trial's ``token_limit``
(:func:`ecotune.evaluator.fits`), so a trial never spends more than its limit; and, like
the runner, once its score's upper bound falls below ``trial.prune_below``
(:mod:`ecotune.pruning`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecotune.bench.collect import read_table_records
from ecotune.evaluator import fits
from ecotune.pruning import should_prune
from ecotune.space import SearchSpace
from ecotune.trial import NOTHING_FIT, Trial, TrialResult, TrialStatus


@dataclass
class Table:
    """A recorded config × instance table.

    Attributes:
        name: the task's name.
        space: the search space the configs were drawn from.
        configs: the K recorded configs (index 0: the HELM default when collected so).
        scores, prompt_tokens, completion_tokens: (K, N) arrays over the first N
            instances of the nested order (for a sampled config recorded with repeats:
            the mean score over its repeats, the expected score, and repeat 0's tokens).
        draws, draw_tokens: (K, N, R) scores and completion tokens of every repeat (NaN /
            -1 where a config has fewer repeats: greedy configs have one), or None.
        instance_ids: the N instance ids, in order.
        helm_index: index of the HELM default config, or None.
    """

    name: str
    space: SearchSpace
    configs: list[dict[str, Any]]
    scores: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    instance_ids: list[str]
    helm_index: int | None = 0
    meta: dict[str, Any] = field(default_factory=dict)
    draws: np.ndarray | None = None
    draw_tokens: np.ndarray | None = None

    def outcome(self, k: int, i: int, repeat: int) -> tuple[float, int]:
        """Score and completion tokens of config ``k`` on instance ``i`` in repeat
        ``repeat`` (taken modulo the repeats config ``k`` has)."""
        if self.draws is None:
            return float(self.scores[k, i]), int(self.completion_tokens[k, i])
        n = int(np.sum(~np.isnan(self.draws[k, i])))
        j = repeat % max(n, 1)
        return float(self.draws[k, i, j]), int(self.draw_tokens[k, i, j])

    def __post_init__(self) -> None:
        self.X = np.array([self.space.encode(c) for c in self.configs])

    @property
    def n_configs(self) -> int:
        return len(self.configs)

    @property
    def n_instances(self) -> int:
        return self.scores.shape[1]

    #: the first instance held out of tuning: true scores are means over instances
    #: ``held_out_from .. N`` (0: over all of them, the table's own full fidelity)
    held_out_from: int = 0

    @property
    def true_scores(self) -> np.ndarray:
        """True score of every recorded config: its mean over the held-out instances
        (all N when none are held out)."""
        return self.scores[:, self.held_out_from:].mean(axis=1)

    def nearest(self, config: dict[str, Any]) -> int:
        """Index of the recorded config nearest to ``config`` in the encoded space."""
        return int(np.argmin(self.distances(config)))

    def distances(self, config: dict[str, Any]) -> np.ndarray:
        x = self.space.encode(config)
        return np.sqrt(((self.X - x) ** 2).sum(axis=1))

    def true_score(self, config: dict[str, Any] | None) -> float:
        """True score of the recorded config nearest to ``config`` (nan for None)."""
        if config is None:
            return float("nan")
        return float(self.true_scores[self.nearest(config)])

    @property
    def helm_config(self) -> dict[str, Any] | None:
        return None if self.helm_index is None else dict(self.configs[self.helm_index])

    @classmethod
    def load(cls, path: str | Path) -> Table:
        """Read a table written by ``ecotune bench collect`` (complete rows only)."""
        recs = read_table_records(path)
        if not recs or recs[0].get("type") != "header":
            raise ValueError(f"{path}: not a benchmark table (no header)")
        head = recs[0]
        cfgs = {r["config_id"]: r for r in recs if r["type"] == "config"}
        n = len(head["order"])
        K = max(cfgs) + 1 if cfgs else 0
        R = int(head.get("repeats", 1))
        D = np.full((K, n, R), np.nan)
        DT = np.full((K, n, R), -1, dtype=np.int64)
        P = np.zeros((K, n), dtype=np.int64)
        for r in recs:
            if r["type"] == "row":
                s_, t_ = np.atleast_1d(r["s"]), np.atleast_1d(r["t"])
                D[r["c"], r["i"], :len(s_)] = s_
                DT[r["c"], r["i"], :len(t_)] = t_
                P[r["c"], r["i"]] = r["p"]
        complete = [k for k in range(K) if k in cfgs and not np.isnan(D[k, :, 0]).any()]
        if not complete:
            raise ValueError(f"{path}: no config has all {n} instances recorded")
        helm = next((j for j, k in enumerate(complete) if cfgs[k].get("helm")), None)
        D, DT = D[complete], DT[complete]
        return cls(name=head["task"], space=SearchSpace.from_dict(head["space"]),
                   configs=[cfgs[k]["config"] for k in complete], scores=np.nanmean(D, axis=2),
                   prompt_tokens=P[complete], completion_tokens=DT[:, :, 0],
                   instance_ids=list(head["order"]), helm_index=helm,
                   meta={k: v for k, v in head.items() if k != "order"},
                   draws=D if R > 1 else None, draw_tokens=DT if R > 1 else None)

    @classmethod
    def from_landscape(cls, land: Any, space: SearchSpace, configs: list[dict[str, Any]],
                       n_instances: int, helm: dict[str, Any] | None = None) -> Table:
        """A table drawn from the synthetic landscape (for tests and CI)."""
        cfgs = ([helm] if helm is not None else []) + list(configs)
        S = np.array([(land.u < land.probs(c)).astype(float)[:n_instances] for c in cfgs])
        P = np.array([land.prompt_tokens(c)[:n_instances] for c in cfgs])
        T = np.array([land.completion_tokens(c)[:n_instances] for c in cfgs])
        return cls(name="synthetic-table", space=space, configs=cfgs, scores=S,
                   prompt_tokens=P, completion_tokens=T,
                   instance_ids=[str(i) for i in range(n_instances)],
                   helm_index=0 if helm is not None else None)


def scan_prefix(trial: Trial, outcome: Any, n_instances: int, known: int,
                instance_ids: list[str]) -> TrialResult:
    """Scan a trial's instances in order, the way the trial runner does: the first
    ``known`` were measured by an earlier trial of the same config (kept and reported as
    reused), then stop once the score can no longer reach ``trial.prune_below`` or before
    an instance whose worst case would pass ``trial.token_limit``.

    Args:
        outcome: ``outcome(i) -> (score, prompt_tokens, completion_tokens, worst_completion)``.
    """
    spent = p_tot = c_tot = reused = 0
    scores: list[float] = []
    status = TrialStatus.COMPLETE
    for i in range(min(trial.fidelity, n_instances)):
        hit, p, c, worst = outcome(i)
        if i < known:
            reused += p + c
        elif should_prune(scores, trial.prune_below):
            status = TrialStatus.PRUNED
            break
        elif not fits(spent, p, worst, trial.token_limit):
            status = TrialStatus.PARTIAL
            break
        else:
            p_tot, c_tot = p_tot + p, c_tot + c
            spent = p_tot + c_tot
        scores.append(float(hit))
    n = len(scores)
    if not scores:
        return TrialResult(score=None, prompt_tokens=0, completion_tokens=0, n_evaluated=0,
                           status=TrialStatus.FAILED, instance_ids=[], instance_scores=[],
                           error=NOTHING_FIT)
    if n < trial.fidelity and status == TrialStatus.COMPLETE:
        status = TrialStatus.PARTIAL  # fewer instances than asked exist
    return TrialResult(score=float(np.mean(scores)), prompt_tokens=p_tot, completion_tokens=c_tot,
                       n_evaluated=n, status=status, instance_ids=instance_ids[:n],
                       instance_scores=scores, reused_tokens=reused)


class ReplayEvaluator:
    """Answers trials from a :class:`Table` (nearest recorded config), charging the
    recorded tokens exactly and honouring ``token_limit``.

    Attributes:
        hits: table indices the trials were mapped to, in order.
        dists: encoded-space distances of those mappings.
    """

    def __init__(self, table: Table, samples_per_request: int = 1, repeat: int = 0):
        self.table = table
        self.repeat = int(repeat)  # which recorded repeat of a sampled config answers
        self.samples = int(samples_per_request)
        self.hits: list[int] = []
        self.dists: list[float] = []
        self.measured: dict[int, int] = {}  # table config -> instances already paid for

    def evaluate(self, trial: Trial) -> TrialResult:
        tb = self.table
        d = tb.distances(trial.config)
        k = int(np.argmin(d))
        self.hits.append(k)
        self.dists.append(float(d[k]))
        cfg = tb.configs[k]
        worst = int(cfg.get("max_tokens", trial.config.get("max_tokens", 16))) * self.samples
        known = self.measured.get(k, 0)

        def outcome(i: int) -> tuple[float, int, int, int]:
            hit, c = tb.outcome(k, i, self.repeat)
            return hit, int(tb.prompt_tokens[k, i]), c, worst

        res = scan_prefix(trial, outcome, tb.n_instances, known, tb.instance_ids)
        self.measured[k] = max(known, res.n_evaluated)
        return res
