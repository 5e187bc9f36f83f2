"""Trial records exchanged between optimizers and whatever runs the trials.

An optimizer hands out a :class:`Trial` from ``ask()`` and takes a :class:`TrialResult`
(or its fields) in ``tell()``. Neither knows where the trial ran: in-process, in a
replay table, or as a Kubeflow step.
"""

from __future__ import annotations

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        d["tokens"] = self.tokens
        return d
