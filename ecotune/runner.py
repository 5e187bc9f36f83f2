"""Run a trial on a real engine: prompts, exact token accounting, scoring, journaling.

:class:`EngineEvaluator` is the evaluator of in-process studies (see
:func:`ecotune.tuner.run_study`). For a trial at fidelity ``r`` it scores the first ``r``
instances of the study's nested order and follows the token-limit rule of
:mod:`ecotune.evaluator`: before each request goes out, the worst case of every request in
flight (prompt + ``max_tokens`` × ``n``) is reserved, and an instance whose worst case would
take the trial past ``token_limit`` is not sent (nor is any after it, so the instances
scored are always a prefix of the order and subsets stay nested). Tokens are charged from
the server's ``usage``, never estimated.

Each finished instance is appended to the study journal (``inst:<trial>:<instance>``) as it
completes; re-running the same trial id (after a crash or Ctrl-C) reuses those records
instead of paying for the instances again.

Example:
    >>> ev = EngineEvaluator(task, engine, order, journal="runs/demo/journal.jsonl")
    >>> result = ev.evaluate(trial)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ecotune.engines.base import Completion
from ecotune.evaluator import fits
from ecotune.journal import Journal, open_journal
from ecotune.sampling import SamplingParams
from ecotune.tasks.base import Instance, Task
from ecotune.trial import Trial, TrialResult, TrialStatus

log = logging.getLogger(__name__)

#: ``on_instance(trial, n_done, tokens_spent)``: called after every instance (for progress).
InstanceHook = Callable[[Trial, int, int], None]


class TrialEvaluationError(RuntimeError):
    """The engine failed mid-trial. ``partial_result`` (status FAILED) holds every token
    already spent, so :func:`ecotune.tuner.run_study` charges them to the budget."""

    def __init__(self, message: str, partial_result: TrialResult):
        super().__init__(message)
        self.partial_result = partial_result


def sampling_params(task: Task, config: dict[str, Any]) -> SamplingParams:
    """The request settings of a trial config: the task's stop sequences, and its default
    ``max_tokens`` unless the config sets one."""
    overrides: dict[str, Any] = {"stop": list(task.stop_sequences)}
    if config.get("max_tokens") is None:
        overrides["max_tokens"] = task.default_max_tokens
    return SamplingParams.from_config(config, **overrides)


class EngineEvaluator:
    """Evaluate trials on an engine, within their token limit (see the module docstring).

    Args:
        task: the task (prompts and scorer).
        engine: an engine (:class:`~ecotune.engines.OpenAIEngine`, ``FakeEngine``).
        instance_ids: the nested fidelity order; a trial at fidelity r uses the first r.
        journal: a journal (or its path / ``s3://`` URI) for per-instance records; None: off.
        max_in_flight: most requests of a trial in flight at once.
        on_instance: optional progress hook, called after every finished instance.
    """

    def __init__(self, task: Task, engine: Any, instance_ids: Sequence[str],
                 journal: Journal | str | os.PathLike[str] | None = None,
                 max_in_flight: int = 8, on_instance: InstanceHook | None = None):
        self.task = task
        self.engine = engine
        self.instance_ids = list(instance_ids)
        if isinstance(journal, (str, os.PathLike)):
            journal = open_journal(journal)
        self.journal = journal
        self.max_in_flight = max(1, int(max_in_flight))
        self.on_instance = on_instance
        by_id = {i.id: i for i in task.instances()}
        missing = [i for i in self.instance_ids if i not in by_id]
        if missing:
            raise ValueError(f"instance ids not in task {task.key!r}: {missing[:5]}")
        self._by_id: dict[str, Instance] = by_id

    # ------------------------------------------------------------------ helpers
    def _previous(self, trial_id: int) -> dict[str, dict[str, Any]]:
        """Instance records this trial already wrote (a resumed trial)."""
        if self.journal is None:
            return {}
        prefix = f"inst:{trial_id}:"
        return {r["instance_id"]: r for r in self.journal.records()
                if r.get("type") == "instance" and str(r.get("key", "")).startswith(prefix)}

    def _score(self, inst: Instance, c: Completion) -> float:
        texts = c.texts
        return sum(float(self.task.score(inst, t)) for t in texts) / max(1, len(texts))

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, trial: Trial) -> TrialResult:
        """Score the trial's first ``fidelity`` instances without passing ``token_limit``."""
        t0 = time.monotonic()
        r = int(trial.fidelity)
        if r > len(self.instance_ids):
            raise ValueError(f"trial {trial.id} asks for {r} instances; the order has "
                             f"{len(self.instance_ids)}")
        ids = self.instance_ids[:r]
        params = sampling_params(self.task, trial.config)
        max_completion = params.worst_case_completion_tokens()
        prev = self._previous(trial.id)

        # done[i] = (score, prompt_tokens, completion_tokens) by position in ids
        done: dict[int, tuple[float, int, int]] = {}
        for pos, iid in enumerate(ids):
            rec = prev.get(iid)
            if rec is not None:
                done[pos] = (float(rec["score"]), int(rec["prompt_tokens"]),
                             int(rec["completion_tokens"]))
        if done:
            log.info("trial %s: reusing %d instance(s) from the journal", trial.id, len(done))

        todo = [pos for pos in range(len(ids)) if pos not in done]
        prompts = [self.task.build_prompt(self._by_id[ids[pos]], trial.config) for pos in todo]
        prompt_counts = list(self.engine.count_prompt_tokens(prompts)) if prompts else []

        spent = sum(p + c for _, p, c in done.values())
        in_flight: dict[int, int] = {}  # index into todo -> reserved worst case
        state = {"stopped": False}

        def may_submit(j: int) -> bool:
            if state["stopped"]:
                return False
            committed = spent + sum(in_flight.values())
            if not fits(committed, prompt_counts[j], max_completion, trial.token_limit):
                state["stopped"] = True
                return False
            in_flight[j] = prompt_counts[j] + max_completion
            return True

        if self.on_instance is not None and done:
            self._hook(trial, len(done), spent)
        try:
            for c in self.engine.generate_iter(prompts, params, max_in_flight=self.max_in_flight,
                                               may_submit=may_submit):
                j = c.index
                in_flight.pop(j, None)
                pos = todo[j]
                iid = ids[pos]
                inst = self._by_id[iid]
                score = self._score(inst, c)
                spent += c.prompt_tokens + c.completion_tokens
                done[pos] = (score, c.prompt_tokens, c.completion_tokens)
                if self.journal is not None:
                    self.journal.append({
                        "type": "instance", "key": f"inst:{trial.id}:{iid}",
                        "trial_id": trial.id, "instance_id": iid, "score": score,
                        "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens,
                        "completion": c.text if isinstance(c.text, str) else list(c.text),
                        "finish_reason": c.finish_reason, "time": time.time()})
                self._hook(trial, len(done), spent)
        except Exception as exc:  # noqa: BLE001 - re-raised with the tokens already spent
            partial = self._result(trial, ids, done, TrialStatus.FAILED, t0,
                                   error=f"{type(exc).__name__}: {exc}")
            raise TrialEvaluationError(
                f"trial {trial.id} failed after {len(done)}/{r} instances "
                f"({partial.tokens} tokens spent): {exc}", partial) from exc

        status = TrialStatus.COMPLETE if len(done) >= r else TrialStatus.PARTIAL
        return self._result(trial, ids, done, status, t0)

    def _hook(self, trial: Trial, n: int, spent: int) -> None:
        if self.on_instance is None:
            return
        try:
            self.on_instance(trial, n, spent)
        except Exception as e:  # noqa: BLE001 - progress must never break a trial
            log.debug("on_instance hook failed: %s", e)

    @staticmethod
    def _result(trial: Trial, ids: list[str], done: dict[int, tuple[float, int, int]],
                status: TrialStatus, t0: float, error: str | None = None) -> TrialResult:
        order = sorted(done)
        scores = [done[p][0] for p in order]
        return TrialResult(
            score=(sum(scores) / len(scores)) if scores else None,
            prompt_tokens=sum(done[p][1] for p in order),
            completion_tokens=sum(done[p][2] for p in order),
            n_evaluated=len(order), status=status,
            instance_ids=[ids[p] for p in order], instance_scores=scores, error=error,
            wall_time_s=time.monotonic() - t0)


def evaluate_config(task: Task, engine: Any, config: dict[str, Any], instance_ids: Sequence[str],
                    max_in_flight: int = 8) -> TrialResult:
    """Score one config on exactly these instances (no token limit, no journal); used for
    held-out evaluation before promotion."""
    ev = EngineEvaluator(task, engine, instance_ids, journal=None, max_in_flight=max_in_flight)
    trial = Trial(id=-1, config=dict(config), fidelity=len(instance_ids), token_limit=2**62)
    return ev.evaluate(trial)
