"""Exact prompt costs, known before a trial runs.

The prompt of every instance at every few-shot count is fixed before anything is sent, so
its token count is not something to predict: it is counted once (vLLM's ``/tokenize``, or
the engine's tokenizer) and remembered by prompt text. The optimizer then sets each trial's
worst case from exact prompt tokens + ``max_tokens`` × n, and its cost model predicts only
completion tokens.

Example:
    >>> counts = PromptTokens(task, engine, order[:r_max])     # doctest: +SKIP
    >>> counts({"few_shot": 3})[:5]                            # doctest: +SKIP
    array([61, 58, 63, 60, 59])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ecotune.tasks.base import Task


class PromptTokens:
    """``config -> exact prompt tokens of each of the first r_max instances`` (shape (r_max,)).

    Args:
        task: builds the prompts.
        engine: counts tokens (``count_prompt_tokens``); each distinct prompt is counted once.
        instance_ids: the nested fidelity order, first r_max.
    """

    def __init__(self, task: Task, engine: Any, instance_ids: Sequence[str]):
        self.task = task
        self.engine = engine
        by_id = {i.id: i for i in task.instances()}
        self.instances = [by_id[i] for i in instance_ids]
        self._by_shots: dict[int, np.ndarray] = {}

    def __call__(self, config: dict[str, Any]) -> np.ndarray:
        # a task's prompt depends on the config only through its few-shot count
        shots = self.task.n_shots(config)
        out = self._by_shots.get(shots)
        if out is None:
            prompts = [self.task.build_prompt(inst, config) for inst in self.instances]
            out = np.array(self.engine.count_prompt_tokens(prompts), dtype=np.int64)
            self._by_shots[shots] = out
        return out


def increment_prompt_tokens(counts: Callable[[dict[str, Any]], np.ndarray] | None,
                            configs: list[dict[str, Any]], done: np.ndarray,
                            levels: np.ndarray) -> np.ndarray | None:
    """Exact prompt tokens of the instances each (config, level) would add to the ``done``
    already measured, shape (len(configs) * len(levels),), from ``counts`` (a
    :class:`PromptTokens`); None when prompt costs are not known (``counts`` None)."""
    if counts is None:
        return None
    out = np.zeros((len(configs), len(levels)))
    for i, cfg in enumerate(configs):
        cum = np.concatenate([[0], np.cumsum(counts(cfg))])
        lo = cum[int(min(done[i], len(cum) - 1))]
        out[i] = np.maximum(cum[np.asarray(levels)] - lo, 0)
    return out.reshape(-1)
