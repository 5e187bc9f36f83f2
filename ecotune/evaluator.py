"""Where trials run: the evaluator interface and its token-limit rule.

An evaluator turns a :class:`~ecotune.trial.Trial` into a :class:`~ecotune.trial.TrialResult`.
Implementations: the engine runner (real vLLM), the replay of a recorded table, the
synthetic landscape, and the pipeline's evaluator step. All honour the same rule: scan the
first ``fidelity`` instances in order and stop *before* an instance whose worst case
(prompt tokens + max_tokens × samples) would take the trial past ``token_limit``.
"""

from __future__ import annotations

from typing import Protocol

from ecotune.trial import Trial, TrialResult


class Evaluator(Protocol):
    def evaluate(self, trial: Trial) -> TrialResult: ...


def fits(spent: int, prompt_tokens: int, max_completion: int, token_limit: int) -> bool:
    """May an instance with this prompt run without risking the trial's token limit?"""
    return spent + prompt_tokens + max_completion <= token_limit
