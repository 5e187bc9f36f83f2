"""The state of one study: what was asked, told and spent, rebuilt from its journal.

Every optimizer shares this accounting and none of them decides it: the hard token budget
(each trial's ``token_limit``), the token cost model, the trials and their results, the
incumbent and the study journal, from which all of it is rebuilt after a crash with no
trial lost or counted twice. What to ask next is the proposer's business
(:class:`~ecotune.optimizers.base.Optimizer`); it reads this state and never writes it.

Example:
    >>> state = StudyState(space, budget_tokens=50_000, r_min=5, r_max=50)  # doctest: +SKIP
    >>> trial = state.new_trial(config, 10, prune_below=None)              # doctest: +SKIP
    >>> state.record_ask(trial, meta={}); state.record_tell(trial.id, result)  # doctest: +SKIP
    >>> state.best(), state.is_told(trial.id)                                 # doctest: +SKIP
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
from ecotune.trial import Trial, TrialResult, TrialStatus, check_result

log = logging.getLogger(__name__)

#: header fields a resumed study must share with the journal it resumes
IDENTITY = ("optimizer", "space", "budget_tokens", "r_min", "r_max", "seed")


class StudyState:
    """Trials, results, budget and cost model of one study, and its journal.

    Args:
        space: the search space.
        budget_tokens: B, the study's hard token budget.
        r_min, r_max: fidelity range (instances per trial).
        seed: the study's seed (recorded; proposers seed their choices with it).
        journal: path or ``s3://`` URI of the study journal; :meth:`open` resumes from it.
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
            recorded benchmark table); every trial's config is one of them.
        warm_start: what the study takes from an earlier one
            (:meth:`ecotune.warmstart.WarmStart.to_dict`), recorded in the journal header; a
            resumed journal must record the same. Its observations are prior data: in
            :meth:`observations` and the cost model, never charged, never results.
    """

    def __init__(
        self,
        space: SearchSpace,
        budget_tokens: int,
        r_min: int,
        r_max: int,
        *,
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
        warm_start: dict[str, Any] | None = None,
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
                                       min_delta=min_delta, max_failed_trials=max_failed_trials)
        self.cost_model = TokenCostModel(prompt_tokens_hint)
        self.prompt_tokens = prompt_tokens
        self.trials: dict[int, Trial] = {}
        self.results: dict[int, TrialResult] = {}
        self.pending: dict[int, Trial] = {}
        self.stop_reason: str | None = None
        self._reissue: list[int] = []
        self._next_id = 0
        #: a trial's first instance needs more than this (the largest limit that admitted
        #: none, + 1): later limits double it; less left stops the study
        self.unaffordable = 0
        #: settings recorded in the journal header (the proposer adds its own)
        self.options: dict[str, Any] = {
            "max_trials": max_trials, "max_failed_trials": max_failed_trials, "eta0": eta0,
            "lam": lam, "fixed": self.fixed, "samples_per_request": self.samples}
        self.candidates = check_candidates(space, candidates)
        self.candidate_X = (np.array([space.encode(c) for c in self.candidates])
                            if self.candidates is not None else None)
        if self.candidates is not None:
            self.options["candidates"] = self.candidates
        self.warm_start = dict(warm_start) if warm_start else None
        #: prior observations of the warm start: (encoded config, instances, score) rows
        self.prior: list[tuple[np.ndarray, float, float]] = []
        self.journal = open_journal(journal) if journal is not None else None

    # ------------------------------------------------------------------ journal / resume
    def header(self, optimizer: str, options: dict[str, Any]) -> dict[str, Any]:
        """The journal's ``study`` record for this state and proposer."""
        return {"type": "study", "key": "study", "optimizer": optimizer,
                "space": self.space.to_dict(), "budget_tokens": self.budget.budget_tokens,
                "r_min": self.r_min, "r_max": self.r_max, "seed": self.seed,
                "study_name": self.study_name, "options": options,
                "prompt_tokens_hint": self.cost_model.prompt_hint,
                **({"warm_start": self.warm_start} if self.warm_start else {}),
                **self.header_extra}

    def open(self, header: dict[str, Any], on_ask: Callable[[Trial, dict[str, Any]], None],
             on_tell: Callable[[Trial, TrialResult], None]) -> None:
        """Write ``header`` to a new journal, or replay an existing one.

        The replay applies every ``ask`` and ``tell`` record in journal order and calls
        ``on_ask``/``on_tell`` after each (the proposer rebuilds its own state there), so a
        resumed study is the study that was interrupted. The cost model's prior is the one
        the header recorded (whoever rebuilds the study, with or without an engine to count
        prompts, prices trials alike). Trials asked but never told are handed out again
        first (:meth:`reissue`).

        Raises:
            JournalError: the journal has no header or holds another study.
        """
        if self.journal is None:
            self._take_prior()
            return
        records = self.journal.records()
        if not records:
            self.journal.append(header)
            self._take_prior()
            return
        head = next((r for r in records if r["type"] == "study"), None)
        if head is None:
            raise JournalError(f"{self.journal.uri}: journal has no study header")
        for k in IDENTITY:
            if head.get(k) != header[k]:
                raise JournalError(
                    f"{self.journal.uri} holds another study: its {k} is {head.get(k)!r}, "
                    f"this one's is {header[k]!r}")
        if (head.get("warm_start") or None) != self.warm_start:
            raise JournalError(
                f"{self.journal.uri} was warm-started otherwise: it records "
                f"{_source(head.get('warm_start'))}, this study {_source(self.warm_start)} "
                "(build_optimizer takes the recorded one)")
        recorded = head.get("prompt_tokens_hint")
        if recorded is not None and float(recorded) != self.cost_model.prompt_hint:
            self.cost_model = TokenCostModel(float(recorded))
        self._take_prior()
        for rec in records:
            if rec["type"] == "ask":
                trial = Trial.from_dict(rec["trial"])
                meta = rec.get("meta", {})
                self._apply_ask(trial)
                on_ask(trial, meta)
            elif rec["type"] == "tell" and rec["trial_id"] in self.pending:
                result = TrialResult.from_dict(rec["result"])
                on_tell(self._apply_tell(rec["trial_id"], result), result)
        self._reissue = sorted(self.pending)

    def _take_prior(self) -> None:
        """The warm start's observations: rows for :meth:`observations`, token counts for
        the cost model. Nothing is charged."""
        self.prior = []
        for o in (self.warm_start or {}).get("observations") or []:
            x = self.space.encode(o["config"])
            n = int(min(int(o["n"]), self.r_max))
            self.prior.append((x, float(n), float(o["score"])))
            self.cost_model.observe(x, n, int(o.get("prompt_tokens", 0)),
                                    int(o.get("completion_tokens", 0)),
                                    self.max_completion(o["config"]))

    def reissue(self) -> Trial | None:
        """The next trial a resumed study asked but never told (original id), or None."""
        return self.trials[self._reissue.pop(0)] if self._reissue else None

    # ------------------------------------------------------------------ ask / tell
    @property
    def n_asked(self) -> int:
        """Trials asked so far, which is also the id the next trial gets."""
        return self._next_id

    def check_stop(self) -> str | None:
        """Why no trial may start now (budget, max trials, convergence, failures), or None;
        the reason is kept in :attr:`stop_reason`."""
        reason = self.budget.stop_reason(self.min_trial_cost())
        if reason is not None:
            self.stop_reason = reason
        return reason

    def new_trial(self, config: dict[str, Any], fidelity: int,
                  prune_below: float | None) -> Trial | None:
        """The next trial for a canonical ``config``, with its hard ``token_limit``.

        The fidelity is clipped into [r_min, r_max]; the limit is the trial's worst case
        (exact prompt tokens when known, else the cost model's cautious ceiling, plus
        ``max_tokens`` × n per instance), never more than the budget still available.
        None (stop reason ``budget``) when not even one instance fits.
        """
        r = int(min(max(fidelity, self.r_min), self.r_max))
        max_c = self.max_completion(config)
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
        # a trial that spent nothing taught the cost model nothing: raise the cap instead
        first = max(first, self.unaffordable)
        limit = int(min(self.budget.available, max(limit, 2 * self.unaffordable)))
        if limit < first:
            self.stop_reason = "budget"
            return None
        return Trial(id=self._next_id, config=config, fidelity=r, token_limit=limit,
                     predicted_tokens=predicted, prune_below=prune_below)

    def record_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        """Journal a new trial and reserve its token limit."""
        if self.journal is not None:
            self.journal.append({"type": "ask", "key": f"ask:{trial.id}", "trial": trial.to_dict(),
                                 "meta": meta, "time": time.time()})
        self._apply_ask(trial)

    def record_tell(self, trial_id: int, result: TrialResult) -> Trial:
        """Check, journal and charge a trial's result; returns the trial it belongs to.

        Every token it spent is charged, failed or not.

        Raises:
            ValueError: the trial was never asked, was told already, or the result cannot
                belong to it (negative tokens, more instances than its fidelity, NaN score).
        """
        tid = int(trial_id)
        if tid in self.results:
            raise ValueError(f"trial {tid} was already told")
        if tid not in self.pending:
            raise ValueError(f"trial {tid} was never asked by this optimizer")
        t = self.trials[tid]
        check_result(t, result)
        if result.tokens > t.token_limit:
            log.error("trial %s spent %s tokens over its limit %s", tid, result.tokens,
                      t.token_limit)
        if self.journal is not None:
            self.journal.append({"type": "tell", "key": f"tell:{tid}", "trial_id": tid,
                                 "result": result.to_dict(), "time": time.time()})
        return self._apply_tell(tid, result)

    def is_told(self, trial_id: int) -> bool:
        """True once the trial's result was recorded (by this process or in the journal)."""
        return int(trial_id) in self.results

    def _apply_ask(self, trial: Trial) -> None:
        self.trials[trial.id] = trial
        self.pending[trial.id] = trial
        self.budget.reserved[trial.id] = trial.token_limit
        self._next_id = max(self._next_id, trial.id + 1)

    def _apply_tell(self, tid: int, result: TrialResult) -> Trial:
        trial = self.pending.pop(tid)
        self.results[tid] = result
        failed = result.status == TrialStatus.FAILED
        full = (result.score if result.score is not None and result.n_evaluated >= self.r_max
                and not failed else None)
        self.budget.charge(tid, result.tokens, full, failed=failed)
        if result.nothing_fit:
            self.unaffordable = max(self.unaffordable, trial.token_limit + 1)
        self.cost_model.observe(self.space.encode(trial.config), result.n_evaluated,
                                result.prompt_tokens, result.completion_tokens,
                                self.max_completion(trial.config))
        return trial

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
        """Tokens charged so far (an upper bound of the engine's bill)."""
        return self.budget.used

    @property
    def tokens_reused(self) -> int:
        """Tokens not bought again: cached answers and measurements kept across trials."""
        return sum(r.reused_tokens for r in self.results.values())

    def observations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encoded configs (N, d), instances evaluated (N,), scores (N,) of scored trials,
        after the warm start's prior observations (first; see :mod:`ecotune.warmstart`)."""
        rows = list(self.prior) + [
            (self.space.encode(self.trials[i].config), r.n_evaluated, r.score)
            for i, r in sorted(self.results.items())
            if r.score is not None and r.n_evaluated > 0 and r.status != TrialStatus.FAILED]
        if not rows:
            return np.zeros((0, self.space.dim)), np.zeros(0), np.zeros(0)
        X, n, y = zip(*rows, strict=True)
        return np.stack(X), np.array(n, float), np.array(y, float)

    def summary(self, optimizer: str) -> dict[str, Any]:
        """The study in one dict: trials, tokens, the best config and why it stopped."""
        cfg, score = self.best()
        return {"optimizer": optimizer, "trials": len(self.results),
                "pending": len(self.pending), "tokens_used": self.budget.used,
                "tokens_reused": self.tokens_reused, "budget_tokens": self.budget.budget_tokens,
                "best_config": cfg, "best_score": score, "stop_reason": self.stop_reason,
                "eta": self.budget.eta}

    # ------------------------------------------------------------------ costs
    def max_completion(self, config: dict[str, Any]) -> int:
        """Completion tokens one instance of ``config`` may produce: ``max_tokens`` × n."""
        return int(config.get("max_tokens", self.fixed.get("max_tokens", 16))) * self.samples

    def min_trial_cost(self) -> float:
        """Worst case of the cheapest trial: r_min instances at the lowest max_tokens, and
        no less than a limit a trial was already seen not to fit in (``unaffordable``)."""
        p = self.space.params.get("max_tokens")
        low = int(p.low) if p is not None and hasattr(p, "low") else self.max_completion({})
        return max(self.r_min * self.cost_model.worst_case_per_instance(low * self.samples),
                   float(self.unaffordable))

    def mean_trial_cost(self) -> float:
        """Mean tokens of the trials told so far; the cheapest trial's worst case before
        any (the E[T] of the budget controller's T̂ when no prediction is at hand)."""
        spent = [r.tokens for r in self.results.values()]
        return sum(spent) / len(spent) if sum(spent) > 0 else max(self.min_trial_cost(), 1.0)


def _source(warm_start: dict[str, Any] | None) -> str:
    return f"a warm start from {warm_start.get('source')}" if warm_start else "no warm start"


def check_candidates(space: SearchSpace,
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
        for n in (n for n in valid if n in c and valid[n] != c[n]):
            raise ValueError(f"candidate {i}: {n}={c[n]!r} is outside the space "
                             f"({space.params[n]!r})")
        out.append(valid)
    return out
