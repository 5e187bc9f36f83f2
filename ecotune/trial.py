"""Trial records exchanged between optimizers and whatever runs the trials.

An optimizer hands out a :class:`Trial` from ``ask()`` and takes a :class:`TrialResult` in
``tell()`` (:meth:`TrialResult.for_trial` builds one from a score and a token count). Neither knows where the trial ran: in-process, in a
replay table, or as a Kubeflow step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class TrialStatus(StrEnum):
    """Outcome of a trial. ``PARTIAL`` means it stopped early at its token limit;
    ``PRUNED`` that it stopped early because it could no longer beat the incumbent."""

    COMPLETE = "complete"
    PARTIAL = "partial"
    PRUNED = "pruned"
    FAILED = "failed"


@dataclass(frozen=True)
class Trial:
    """One configuration to score on the first ``fidelity`` instances of a task.

    Attributes:
        id: Study-unique, increasing trial number.
        config: Inference settings by parameter name (see :mod:`ecotune.space`).
        fidelity: Number of task instances r to score on, ``r_min <= r <= r_max``.
        token_limit: Most tokens (prompt + completion) the trial may spend. The code that
            runs it stops before an instance whose worst case would pass this limit.
        predicted_tokens: The cost model's expected spend, for reporting.
        prune_below: Stop the trial early once its score's upper confidence bound falls
            below this (the incumbent's lower bound at r_max); None: never (see
            :mod:`ecotune.pruning`).
    """

    id: int
    config: dict[str, Any]
    fidelity: int
    token_limit: int
    predicted_tokens: float = 0.0
    prune_below: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(
            id=int(d["id"]),
            config=dict(d["config"]),
            fidelity=int(d["fidelity"]),
            token_limit=int(d["token_limit"]),
            predicted_tokens=float(d.get("predicted_tokens", 0.0)),
            prune_below=None if d.get("prune_below") is None else float(d["prune_below"]),
        )


#: the error of a trial whose token limit did not admit its first instance
NOTHING_FIT = "token limit below one instance"


@dataclass
class TrialResult:
    """What running a trial produced; every token the engine reported is counted.

    ``score`` is the mean per-instance score over the ``n_evaluated`` instances actually
    scored (``None`` when none was). ``prompt_tokens`` and ``completion_tokens`` are what
    the engine reported in ``usage``; ``unsettled_tokens`` are the worst cases kept for
    requests whose outcome stayed unknown (see :mod:`ecotune.ledger`). ``tokens``, what the
    budget is charged, is all three together: an upper bound of the engine's bill.
    ``reused_tokens`` are tokens *not* spent: answers taken from the response cache and
    instances kept from an earlier trial of the same config (what buying them again would
    have cost).
    """

    score: float | None
    prompt_tokens: int
    completion_tokens: int
    n_evaluated: int
    status: TrialStatus = TrialStatus.COMPLETE
    instance_ids: list[str] = field(default_factory=list)
    instance_scores: list[float] = field(default_factory=list)
    error: str | None = None
    wall_time_s: float = 0.0
    unsettled_tokens: int = 0
    reused_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens + self.unsettled_tokens

    @property
    def nothing_fit(self) -> bool:
        """True when the trial's token limit did not admit even its first instance: it
        ran nothing and spent nothing (an engine error is not this: it carries its own
        ``error``)."""
        return (self.n_evaluated == 0 and self.tokens == 0
                and self.status in (TrialStatus.PARTIAL, TrialStatus.FAILED)
                and self.error in (None, NOTHING_FIT))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        d["tokens"] = self.tokens
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        """The inverse of :meth:`to_dict` (journal ``tell`` records)."""
        score = d.get("score")
        return cls(score=None if score is None else float(score),
                   prompt_tokens=int(d.get("prompt_tokens", 0)),
                   completion_tokens=int(d.get("completion_tokens", 0)),
                   n_evaluated=int(d.get("n_evaluated", 0)),
                   status=TrialStatus(d.get("status", "complete")),
                   instance_ids=list(d.get("instance_ids", [])),
                   instance_scores=list(d.get("instance_scores", [])), error=d.get("error"),
                   wall_time_s=float(d.get("wall_time_s", 0.0)),
                   unsettled_tokens=int(d.get("unsettled_tokens", 0)),
                   reused_tokens=int(d.get("reused_tokens", 0)))

    @classmethod
    def for_trial(cls, trial: Trial, *, score: float | None = None, tokens: int | None = None,
                  n_evaluated: int | None = None, prompt_tokens: int | None = None,
                  completion_tokens: int | None = None, status: TrialStatus | str | None = None,
                  error: str | None = None, instance_ids: list[str] | None = None,
                  instance_scores: list[float] | None = None,
                  wall_time_s: float = 0.0) -> TrialResult:
        """A result for ``trial`` from what a simple evaluator knows.

        ``tokens`` alone is enough for accounting (all counted as prompt tokens);
        ``prompt_tokens``/``completion_tokens`` sharpen the cost model. ``n_evaluated``
        defaults to the trial's fidelity; ``status`` to failed without a score, partial
        below the fidelity, complete otherwise.

        Example:
            >>> opt.tell(trial, TrialResult.for_trial(trial, score=0.7, tokens=1200))  # doctest: +SKIP

        Raises:
            ValueError: no token count, or ``tokens`` disagrees with its two parts.
        """
        if tokens is None and prompt_tokens is None:
            raise ValueError("a result needs tokens (or prompt_tokens and completion_tokens)")
        completion = int(completion_tokens or 0)
        prompt = int(prompt_tokens) if prompt_tokens is not None else int(tokens) - completion
        if tokens is not None and prompt + completion != int(tokens):
            raise ValueError(f"tokens ({tokens}) != prompt_tokens + completion_tokens "
                             f"({prompt} + {completion})")
        n = trial.fidelity if n_evaluated is None else int(n_evaluated)
        if status is None:
            status = (TrialStatus.FAILED if score is None else
                      TrialStatus.COMPLETE if n >= trial.fidelity else TrialStatus.PARTIAL)
        return cls(score=None if score is None else float(score), prompt_tokens=prompt,
                   completion_tokens=completion, n_evaluated=n, status=TrialStatus(status),
                   instance_ids=list(instance_ids or []),
                   instance_scores=list(instance_scores or []), error=error,
                   wall_time_s=float(wall_time_s))


def check_result(t: Trial, r: TrialResult) -> None:
    """Refuse a result that cannot belong to trial ``t``."""
    if r.prompt_tokens < 0 or r.completion_tokens < 0 or r.unsettled_tokens < 0:
        raise ValueError("token counts must be >= 0")
    if not 0 <= r.n_evaluated <= t.fidelity:
        raise ValueError(f"n_evaluated ({r.n_evaluated}) must be in [0, {t.fidelity}]")
    if r.score is not None and not math.isfinite(r.score):
        raise ValueError(f"score must be finite, got {r.score}")
