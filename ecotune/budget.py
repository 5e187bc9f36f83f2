"""The token budget controller (the paper's equations 5, 8 and 9).

It answers "how much may the next trial spend" and "must the study stop" from the study's
accounting, outside any acquisition code:

* eq. 5: ``B_used`` (tokens charged) and ``B_remain = B − B_used``;
* eq. 8: ``T̂ = ⌊B_remain / E[T]⌋``, trials the remaining budget affords at the expected cost;
* eq. 9: ``η ← η · exp(−λ · B_remain / B)`` after every charged trial: the exploration weight
  decays, fastest while most of the budget is still unspent.

The budget is hard: tokens reserved for running trials are set aside, and a trial's
``token_limit`` never exceeds what is left after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class BudgetController:
    """Token accounting and stopping rules for one study.

    Args:
        budget_tokens: B, the most tokens the study may spend.
        eta0: initial exploration weight η.
        lam: λ, the decay rate of η.
        max_trials: stop after this many told trials (None: no limit).
        patience: stop when the incumbent at r_max has not improved by ``min_delta`` over
            this many consecutive full-fidelity trials (None: never on convergence).
        min_delta: improvement that counts for convergence.
        max_failed_trials: stop after this many consecutive failed trials, in the order
            they were told (None: never). A broken engine, a wrong model name or a missing
            secret fails every trial; the study stops instead of charging them all.
    """

    budget_tokens: int
    eta0: float = 1.0
    lam: float = 0.1
    max_trials: int | None = None
    patience: int | None = 10
    min_delta: float = 1e-3
    max_failed_trials: int | None = None
    used: int = 0
    eta: float = field(init=False)
    reserved: dict[int, int] = field(default_factory=dict)
    n_told: int = 0
    _best_full: float = -math.inf
    _stale: int = 0
    failed_streak: int = 0

    def __post_init__(self) -> None:
        if self.budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be positive, got {self.budget_tokens}")
        if self.lam < 0:
            raise ValueError("lambda must be >= 0")
        if self.max_failed_trials is not None and self.max_failed_trials < 1:
            raise ValueError(f"max_failed_trials must be >= 1, got {self.max_failed_trials}")
        self.eta = float(self.eta0)

    # eq. 5 ---------------------------------------------------------------------------
    @property
    def remain(self) -> int:
        return self.budget_tokens - self.used

    @property
    def available(self) -> int:
        """What a new trial may still reserve: B_remain minus running trials' limits."""
        return self.remain - sum(self.reserved.values())

    # eq. 8 ---------------------------------------------------------------------------
    def t_hat(self, expected_cost: float) -> int:
        """Trials the remaining budget affords at ``expected_cost`` tokens each."""
        if expected_cost <= 0:
            raise ValueError("expected cost must be positive")
        return int(max(self.remain, 0) // expected_cost)

    # accounting ----------------------------------------------------------------------
    def reserve(self, trial_id: int, token_limit: int) -> None:
        if token_limit > self.available:
            raise ValueError(
                f"trial {trial_id} asks {token_limit} tokens, only {self.available} available")
        self.reserved[trial_id] = token_limit

    def charge(self, trial_id: int, tokens: int, full_fidelity_score: float | None = None,
               failed: bool = False) -> None:
        """Charge a finished trial, release its reservation, apply eq. 9; ``failed``
        extends the run of consecutive failed trials, anything else ends it."""
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        self.reserved.pop(trial_id, None)
        self.used += int(tokens)
        self.n_told += 1
        self.failed_streak = self.failed_streak + 1 if failed else 0
        self.eta *= math.exp(-self.lam * max(self.remain, 0) / self.budget_tokens)
        if full_fidelity_score is not None:
            if full_fidelity_score > self._best_full + self.min_delta:
                self._best_full = full_fidelity_score
                self._stale = 0
            else:
                self._stale += 1

    # stopping ------------------------------------------------------------------------
    def stop_reason(self, min_trial_cost: float) -> str | None:
        """Why the study must stop now, or None. ``min_trial_cost`` is the worst case of
        the cheapest trial that could still run (r_min instances)."""
        if self.max_failed_trials is not None and self.failed_streak >= self.max_failed_trials:
            return "failed_trials"
        if self.max_trials is not None and self.n_told + len(self.reserved) >= self.max_trials:
            return "max_trials"
        if self.available < min_trial_cost:
            return "budget"
        if self.patience is not None and self._stale >= self.patience:
            return "converged"
        return None
