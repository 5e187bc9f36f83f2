"""The ask/tell contract every optimizer follows, and the study accounting they share.

An optimizer proposes trials (``ask``) and learns from their results (``tell``); it never
knows where or how a trial ran. The base class owns what all optimizers must do the same
way: the hard token budget (each trial's ``token_limit``), the cost model, the stopping
rules, and the study journal, from which an optimizer is rebuilt after a crash with no
trial lost or counted twice. Subclasses only implement :meth:`Optimizer._propose` (and, if
they keep state, the ``_on_ask`` / ``_on_tell`` hooks, which replay calls too).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ecotune.best import best_trial
from ecotune.budget import BudgetController
from ecotune.cost import TokenCostModel
from ecotune.journal import JournalError, open_journal
from ecotune.space import SearchSpace
from ecotune.trial import Trial, TrialResult, TrialStatus, check_result, result_from_fields

log = logging.getLogger(__name__)

Proposal = tuple[dict[str, Any], int, dict[str, Any]]  # (config, fidelity, meta)


class Optimizer:
    """Base of all optimizers.

    Args:
        space: the search space.
        budget_tokens: B, the study's hard token budget.
        r_min, r_max: fidelity range (instances per trial).
        seed: seeds every random choice; replays are deterministic.
        journal: path or ``s3://`` URI of the study journal; resumes if it holds one.
        max_trials: stop after this many trials.
        max_failed_trials: stop after this many consecutive failed trials (None: never).
        eta0, lam: the budget controller's η and λ (eq. 9).
        patience, min_delta: convergence stop (None: off).
        fixed: settings sent with every config (e.g. ``max_tokens`` when not searched).
        prompt_tokens_hint: prior prompt tokens per instance for the cost model.
        samples_per_request: completions per instance (n), for worst-case costs.
        study_name: the study's name, recorded in the journal header.
        header_extra: more fields for the journal header (e.g. ``spec`` and ``tags`` that
            tracking replays from the journal); not compared on resume.
        prompt_tokens: ``config -> exact prompt tokens of each of the first r_max
            instances`` (:class:`~ecotune.prompt_tokens.PromptTokens`): trials' worst cases
            then use exact prompt tokens, and the cost model predicts only completions.
        candidates: a finite set of allowed configs (vetted presets, or the configs of a
            recorded benchmark table). Every proposal is one of them: optimizers that model
            the score (``candidate_aware``) choose among them directly, the others'
            proposals are mapped to the nearest candidate in the encoded space.
    """

    name = "base"
    #: the fidelity every trial runs at (single-fidelity baselines use r_max).
    single_fidelity = True
    #: True if ``_propose`` itself picks among ``candidates`` (else proposals are snapped).
    candidate_aware = False

    def __init__(
        self,
        space: SearchSpace,
        budget_tokens: int,
        r_min: int,
        r_max: int,
        seed: int = 0,
        journal: str | None = None,
        max_trials: int | None = None,
        max_failed_trials: int | None = None,
        eta0: float = 0.1,
        lam: float = 0.1,
        patience: int | None = None,
        min_delta: float = 1e-3,
        fixed: dict[str, Any] | None = None,
        prompt_tokens_hint: float = 200.0,
        samples_per_request: int = 1,
        study_name: str | None = None,
        header_extra: dict[str, Any] | None = None,
        candidates: list[dict[str, Any]] | None = None,
        prompt_tokens: Callable[[dict[str, Any]], np.ndarray] | None = None,
    ):
        if not isinstance(space, SearchSpace):
            raise TypeError("space must be an ecotune.SearchSpace")
        if int(r_min) < 1:
            raise ValueError(f"r_min must be >= 1, got {r_min}")
        if int(r_min) > int(r_max):
            raise ValueError(f"r_min ({r_min}) must be <= r_max ({r_max})")
        if int(budget_tokens) <= 0:
            raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
        self.space = space
        self.r_min, self.r_max = int(r_min), int(r_max)
        self.seed = int(seed)
        self.fixed = dict(fixed or {})
        self.samples = int(samples_per_request)
        self.study_name = study_name
        self.header_extra = dict(header_extra or {})
        self.budget = BudgetController(int(budget_tokens), eta0=eta0, lam=lam,
                                       max_trials=max_trials, patience=patience,
                                       min_delta=min_delta,
                                       max_failed_trials=max_failed_trials)
        self.cost_model = TokenCostModel(prompt_tokens_hint)
        self.prompt_tokens = prompt_tokens
        self.trials: dict[int, Trial] = {}
        self.results: dict[int, TrialResult] = {}
        self.pending: dict[int, Trial] = {}
        self._reissue: list[int] = []
        self._next_id = 0
        self.stop_reason: str | None = None
        self._options = {"max_trials": max_trials, "max_failed_trials": max_failed_trials,
                         "eta0": eta0, "lam": lam,
                         "fixed": self.fixed, "samples_per_request": self.samples}
        self.candidates = _check_candidates(space, candidates)
        self.candidate_X = (np.array([space.encode(c) for c in self.candidates])
                            if self.candidates is not None else None)
        if self.candidates is not None:
            self._options["candidates"] = self.candidates
        self.journal = open_journal(journal) if journal is not None else None

    # ------------------------------------------------------------------ journal / resume
    def _header(self) -> dict[str, Any]:
        return {"type": "study", "key": "study", "optimizer": self.name,
                "space": self.space.to_dict(), "budget_tokens": self.budget.budget_tokens,
                "r_min": self.r_min, "r_max": self.r_max, "seed": self.seed,
                "study_name": self.study_name, "options": self._options, **self.header_extra}

    def _open(self) -> None:
        """Write the header of a new journal, or replay an existing one."""
        if self.journal is None:
            return
        records = self.journal.records()
        if not records:
            self.journal.append(self._header())
            return
        head = next((r for r in records if r["type"] == "study"), None)
        if head is None:
            raise JournalError(f"{self.journal.uri}: journal has no study header")
        mine = self._header()
        for k in ("optimizer", "space", "budget_tokens", "r_min", "r_max", "seed"):
            if head.get(k) != mine[k]:
                raise JournalError(
                    f"{self.journal.uri} holds another study: its {k} is {head.get(k)!r}, "
                    f"this one's is {mine[k]!r}")
        for rec in records:
            if rec["type"] == "ask":
                self._apply_ask(Trial.from_dict(rec["trial"]), rec.get("meta", {}))
            elif rec["type"] == "tell" and rec["trial_id"] in self.pending:
                self._apply_tell(rec["trial_id"], TrialResult.from_dict(rec["result"]))
        self._reissue = sorted(self.pending)

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> Trial | None:
        """The next trial to run, or None when the study is done (see ``stop_reason``).

        After a resume, trials that were asked but never told are handed out again first,
        with their original ids, so a runner can continue them.
        """
        if self._reissue:
            return self.trials[self._reissue.pop(0)]
        reason = self.budget.stop_reason(self._min_trial_cost())
        if reason is not None:
            self.stop_reason = reason
            return None
        proposal = self._propose()
        if proposal is None:
            self.stop_reason = self.stop_reason or "exhausted"
            return None
        config, r, meta = proposal
        if self.candidates is not None and not self.candidate_aware:
            config = self.nearest_candidate(config)
        # canonical: settings inert in this config (sampling knobs under greedy decoding)
        # are dropped, so configs that decode identically are one config everywhere
        config = self.space.canonical({**self.fixed, **config})
        r = int(min(max(r, self.r_min), self.r_max))
        max_c = self._max_completion(config)
        x = self.space.encode(config)
        if self.prompt_tokens is not None:  # exact worst case: prompts are known
            prompts = self.prompt_tokens(config)
            first = int(prompts[0]) + max_c
            limit = int(min(self.budget.available, int(prompts[:r].sum()) + r * max_c))
            predicted = float(self.cost_model.predict(x[None], [max_c], r,
                                                      prompt_tokens=[prompts[:r].sum()])[0])
        else:
            first = self.cost_model.worst_case_per_instance(max_c)
            limit = int(min(self.budget.available,
                            math.ceil(r * first + self.cost_model.beta())))
            predicted = float(self.cost_model.predict(x[None], [max_c], r)[0])
        if limit < first:
            self.stop_reason = "budget"
            return None
        trial = Trial(id=self._next_id, config=config, fidelity=r, token_limit=limit,
                      predicted_tokens=predicted, prune_below=self.prune_below())
        if self.journal is not None:
            self.journal.append({"type": "ask", "key": f"ask:{trial.id}", "trial": trial.to_dict(),
                                 "meta": meta, "time": time.time()})
        self._apply_ask(trial, meta)
        return trial

    def tell(
        self,
        trial: Trial | int,
        score: float | None = None,
        tokens: int | None = None,
        n_evaluated: int | None = None,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        status: TrialStatus | str | None = None,
        error: str | None = None,
        instance_ids: list[str] | None = None,
        instance_scores: list[float] | None = None,
        wall_time_s: float = 0.0,
        result: TrialResult | None = None,
    ) -> None:
        """Report a trial's outcome. Every token it spent is charged, failed or not.

        Give either ``result`` or the fields. ``tokens`` alone is enough for accounting;
        ``prompt_tokens``/``completion_tokens`` sharpen the cost model.
        """
        tid = trial.id if isinstance(trial, Trial) else int(trial)
        if tid in self.results:
            raise ValueError(f"trial {tid} was already told")
        if tid not in self.pending:
            raise ValueError(f"trial {tid} was never asked by this optimizer")
        t = self.trials[tid]
        if result is None:
            result = result_from_fields(t, score, tokens, n_evaluated, prompt_tokens,
                                  completion_tokens, status, error, instance_ids,
                                  instance_scores, wall_time_s)
        check_result(t, result)
        if result.tokens > t.token_limit:
            log.error("trial %s spent %s tokens over its limit %s", tid, result.tokens,
                      t.token_limit)
        if self.journal is not None:
            self.journal.append({"type": "tell", "key": f"tell:{tid}", "trial_id": tid,
                                 "result": result.to_dict(), "time": time.time()})
        self._apply_tell(tid, result)

    def _apply_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        self.trials[trial.id] = trial
        self.pending[trial.id] = trial
        self.budget.reserved[trial.id] = trial.token_limit
        self._next_id = max(self._next_id, trial.id + 1)
        self._on_ask(trial, meta)

    def _apply_tell(self, tid: int, result: TrialResult) -> None:
        trial = self.pending.pop(tid)
        self.results[tid] = result
        full = (result.score if result.score is not None and result.n_evaluated >= self.r_max
                and result.status != TrialStatus.FAILED else None)
        self.budget.charge(tid, result.tokens, full,
                           failed=result.status == TrialStatus.FAILED)
        self.cost_model.observe(self.space.encode(trial.config), result.n_evaluated,
                                result.prompt_tokens, result.completion_tokens,
                                self._max_completion(trial.config))
        self._on_tell(trial, result)

    # ------------------------------------------------------------------ results
    def best(self) -> tuple[dict[str, Any] | None, float | None]:
        """(config, score) of the best configuration (see :mod:`ecotune.best`): the best
        observed at r_max; before any trial reached r_max, the best at the highest count of
        instances measured. (None, None) before any score."""
        best = best_trial(self.results.items(), self.r_max)
        if best is None:
            return None, None
        return dict(self.trials[best[0]].config), best[1]

    @property
    def tokens_used(self) -> int:
        return self.budget.used

    @property
    def tokens_reused(self) -> int:
        """Tokens not bought again: cached answers and measurements kept across trials."""
        return sum(r.reused_tokens for r in self.results.values())

    def observations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encoded configs (N, d), instances evaluated (N,), scores (N,) of scored trials."""
        rows = [(self.space.encode(self.trials[i].config), r.n_evaluated, r.score)
                for i, r in sorted(self.results.items())
                if r.score is not None and r.n_evaluated > 0 and r.status != TrialStatus.FAILED]
        if not rows:
            return np.zeros((0, self.space.dim)), np.zeros(0), np.zeros(0)
        X, n, y = zip(*rows, strict=True)
        return np.stack(X), np.array(n, float), np.array(y, float)

    def summary(self) -> dict[str, Any]:
        cfg, score = self.best()
        return {"optimizer": self.name, "trials": len(self.results), "pending": len(self.pending),
                "tokens_used": self.budget.used, "tokens_reused": self.tokens_reused,
                "budget_tokens": self.budget.budget_tokens,
                "best_config": cfg, "best_score": score, "stop_reason": self.stop_reason,
                "eta": self.budget.eta}

    # ------------------------------------------------------------------ helpers
    def nearest_candidate(self, config: dict[str, Any]) -> dict[str, Any]:
        """The candidate nearest to ``config`` in the encoded space (Euclidean)."""
        assert self.candidates is not None and self.candidate_X is not None
        d = ((self.candidate_X - self.space.encode(config)) ** 2).sum(axis=1)
        return dict(self.candidates[int(np.argmin(d))])

    def _unseen_candidate(self, config: dict[str, Any]) -> dict[str, Any]:
        """The candidate nearest to ``config`` that no trial has used yet (the nearest
        one when all were used): an initial design over a finite set without repeats."""
        assert self.candidates is not None and self.candidate_X is not None
        used = {encoded_key(self.space.encode(t.config)) for t in self.trials.values()}
        d = ((self.candidate_X - self.space.encode(config)) ** 2).sum(axis=1)
        order = np.argsort(d, kind="stable")
        k = next((int(i) for i in order if encoded_key(self.candidate_X[i]) not in used), int(order[0]))
        return dict(self.candidates[k])

    def _max_completion(self, config: dict[str, Any]) -> int:
        return int(config.get("max_tokens", self.fixed.get("max_tokens", 16))) * self.samples

    def _min_trial_cost(self) -> float:
        """Worst case of the cheapest full trial: r_min instances at the lowest max_tokens."""
        p = self.space.params.get("max_tokens")
        low = int(p.low) if p is not None and hasattr(p, "low") else self._max_completion({})
        return self.r_min * self.cost_model.worst_case_per_instance(low * self.samples)

    def _sobol_config(self) -> dict[str, Any]:
        """The config at this trial's position in the study's scrambled Sobol sequence
        (depends only on seed and trial id, so replays reproduce it)."""
        from scipy.stats import qmc

        engine = qmc.Sobol(d=self.space.dim, scramble=True, seed=self.seed)
        if self._next_id:
            engine.fast_forward(self._next_id)
        return self.space.decode(engine.random(1)[0])

    def _rng(self, *salt: int) -> np.random.Generator:
        """A generator that depends only on the seed and ``salt``: replays reproduce it."""
        return np.random.default_rng([self.seed, *salt])

    # ------------------------------------------------------------------ subclass hooks
    def prune_below(self) -> float | None:
        """The score a new trial must still be able to reach, or None: never stop early
        (optimizers that prune override this; see :mod:`ecotune.pruning`)."""
        return None

    def _propose(self) -> Proposal | None:
        raise NotImplementedError

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        """Bookkeeping when a trial is asked (also called on replay)."""

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        """Learn from a result (also called on replay)."""


def encoded_key(x: np.ndarray) -> tuple[float, ...]:
    """A hashable identity for an encoded config."""
    return tuple(np.round(np.asarray(x, float), 9))


def _check_candidates(space: SearchSpace,
                      candidates: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Candidates as given, or a ValueError naming the first one outside the space."""
    if candidates is None:
        return None
    if not candidates:
        raise ValueError("candidates, when given, must hold at least one config")
    out = []
    for i, c in enumerate(candidates):
        if not isinstance(c, dict):
            raise ValueError(f"candidate {i}: expected a mapping of settings, got {c!r:.80}")
        unknown = sorted(set(c) - set(space.params))
        if unknown:
            raise ValueError(f"candidate {i}: unknown parameter(s) {', '.join(unknown)}; "
                             f"the space has {', '.join(space.names)}")
        valid = space.validate_config(c)
        bad = [n for n in valid if n in c and valid[n] != c[n]]
        if bad:
            n = bad[0]
            raise ValueError(f"candidate {i}: {n}={c[n]!r} is outside the space "
                             f"({space.params[n]!r})")
        out.append(valid)
    return out
