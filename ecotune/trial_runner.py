"""Run a trial on a real engine: prompts, exact token accounting, scoring, journaling.

:class:`EngineEvaluator` is the evaluator of in-process studies (see
:func:`ecotune.study_loop.run_study`). For a trial at fidelity ``r`` it scores the first ``r``
instances of the study's nested order and charges every request through a
:class:`~ecotune.ledger.TokenLedger` (authorize, then capture): before a request goes out
its worst case (exact prompt tokens + ``max_tokens`` × ``n``) is reserved against the
trial's ``token_limit``, and an instance whose worst case would not fit is not sent (nor is
any after it, so the instances scored are always a prefix of the order and subsets stay
nested). Answers are settled to the server's ``usage``; a request whose outcome stays
unknown keeps its worst case. So the trial's ``tokens`` are an upper bound of what the
engine billed for it, and never more than ``token_limit``.

With a journal, each hold is written (``hold:<trial>:<run>:<n>``) before its request is
sent, and each finished instance (``inst:<trial>:<instance>``, naming the holds it settles)
as it completes. Re-running the same trial id (after a crash, a kill or Ctrl-C) reuses the
instance records instead of paying for them again, and charges the holds no instance
settled at their worst case: the killed run's requests may have been billed.

Example:
    >>> ev = EngineEvaluator(task, engine, order, journal="runs/demo/journal.jsonl")
    >>> result = ev.evaluate(trial)          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ecotune.cache import ResponseCache
from ecotune.decoding import SamplingParams
from ecotune.engines.base import Completion
from ecotune.journal import Journal, open_journal
from ecotune.ledger import Hold, TokenLedger, orphan_holds
from ecotune.pruning import should_prune
from ecotune.tasks.base import Instance, Task
from ecotune.trial import Trial, TrialResult, TrialStatus

log = logging.getLogger(__name__)

#: ``on_instance(trial, n_done, tokens_spent)``: called after every instance (for progress).
InstanceHook = Callable[[Trial, int, int], None]


class TrialEvaluationError(RuntimeError):
    """The engine failed mid-trial. ``partial_result`` (status FAILED) holds every token
    already spent, so :func:`ecotune.study_loop.run_study` charges them to the budget."""

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


@dataclass
class _Done:
    """One scored instance: its score, what this trial was charged for it (usage), and
    what it would have cost to buy again (kept from another trial, or cached)."""

    score: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    unsettled_tokens: int = 0  # worst cases kept for failed attempts before the answer


class EngineEvaluator:
    """Evaluate trials on an engine, within their token limit (see the module docstring).

    Nothing is bought twice. An instance is taken, in this order, from: this trial's own
    journal records (a resumed trial); an earlier trial of the same config (promotion from
    r to r' pays only for the new instances: nested subsets make the first r measurements
    valid for r', greedy or sampled); the response cache (deterministic decoding); and
    only then the engine.

    Args:
        task: the task (prompts and scorer).
        engine: an engine (:class:`~ecotune.engines.OpenAIEngine`, ``FakeEngine``).
        instance_ids: the nested fidelity order; a trial at fidelity r uses the first r.
        journal: a journal (or its path / ``s3://`` URI) for per-instance records; None: off.
        max_in_flight: most requests of a trial in flight at once.
        on_instance: optional progress hook, called after every finished instance.
        cache: the response cache of deterministic answers; None: off.
    """

    def __init__(self, task: Task, engine: Any, instance_ids: Sequence[str],
                 journal: Journal | str | os.PathLike[str] | None = None,
                 max_in_flight: int = 8, on_instance: InstanceHook | None = None,
                 cache: ResponseCache | None = None):
        self.task = task
        self.engine = engine
        self.instance_ids = list(instance_ids)
        if isinstance(journal, (str, os.PathLike)):
            journal = open_journal(journal)
        self.journal = journal
        self.max_in_flight = max(1, int(max_in_flight))
        self.on_instance = on_instance
        self.cache = cache
        by_id = {i.id: i for i in task.instances()}
        missing = [i for i in self.instance_ids if i not in by_id]
        if missing:
            raise ValueError(f"instance ids not in task {task.key!r}: {missing[:5]}")
        self._by_id: dict[str, Instance] = by_id

    # ------------------------------------------------------------------ helpers
    def _known(self, trial: Trial) -> tuple[dict[str, _Done], dict[str, _Done], int]:
        """From the journal: this trial's own instance records (a resumed trial), the
        instances earlier trials of the same config measured, and the worst cases of this
        trial's holds no instance record settled (requests of a stopped run)."""
        if self.journal is None:
            return {}, {}, 0
        records = self.journal.records()
        me = config_identity(trial.config)
        own: dict[str, _Done] = {}
        kept: dict[str, _Done] = {}
        for r in records:
            if r.get("type") != "instance":
                continue
            tid, iid = int(r["trial_id"]), str(r["instance_id"])
            cost = int(r["prompt_tokens"]) + int(r["completion_tokens"])
            if tid == trial.id:
                own[iid] = _Done(float(r["score"]), int(r["prompt_tokens"]),
                                 int(r["completion_tokens"]), int(r.get("reused_tokens", 0)),
                                 int(r.get("unsettled_tokens", 0)))
            elif r.get("config_id") == me and iid not in kept:
                kept[iid] = _Done(float(r["score"]),
                                  reused_tokens=cost + int(r.get("reused_tokens", 0)))
        return own, kept, orphan_holds(records, trial.id)

    def _score(self, inst: Instance, c: Completion) -> float:
        if c.error is not None:  # billed, but nothing usable came back: the instance failed
            return 0.0
        texts = c.texts
        return sum(float(self.task.score(inst, t)) for t in texts) / max(1, len(texts))

    def _record(self, trial: Trial, iid: str, d: _Done, **extra: Any) -> None:
        if self.journal is not None:
            self.journal.append({
                "type": "instance", "key": f"inst:{trial.id}:{iid}", "trial_id": trial.id,
                "instance_id": iid, "config_id": config_identity(trial.config),
                "score": d.score, "prompt_tokens": d.prompt_tokens,
                "completion_tokens": d.completion_tokens, "reused_tokens": d.reused_tokens,
                "time": time.time(), **extra})

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, trial: Trial) -> TrialResult:
        """Score the trial's first ``fidelity`` instances; charged at most ``token_limit``;
        stopped early (``pruned``) once it cannot beat ``trial.prune_below``."""
        t0 = time.monotonic()
        r = int(trial.fidelity)
        if r > len(self.instance_ids):
            raise ValueError(f"trial {trial.id} asks for {r} instances; the order has "
                             f"{len(self.instance_ids)}")
        ids = self.instance_ids[:r]
        params = sampling_params(self.task, trial.config)
        own, kept, orphans = self._known(trial)

        done: dict[int, _Done] = {}  # by position in ids
        before = orphans
        for pos, iid in enumerate(ids):
            if iid in own:
                done[pos] = own[iid]
                d = own[iid]
                before += d.prompt_tokens + d.completion_tokens + d.unsettled_tokens
            elif iid in kept:
                done[pos] = kept[iid]
                self._record(trial, iid, kept[iid], source="kept")
        if done or orphans:
            log.info("trial %s: %d instance(s) known from the journal; %d tokens of "
                     "unsettled requests charged", trial.id, len(done), orphans)

        todo = [pos for pos in range(len(ids)) if pos not in done]
        prompts = [self.task.build_prompt(self._by_id[ids[pos]], trial.config) for pos in todo]
        if self.cache is not None:
            todo, prompts = self._from_cache(trial, ids, todo, prompts, params, done)
        prompt_counts = list(self.engine.count_prompt_tokens(prompts)) if prompts else []
        run = uuid.uuid4().hex[:12]
        ledger = TokenLedger(limit=trial.token_limit, charged_before=before,
                             on_hold=lambda h: self._write_hold(trial, run, ids[todo[h.index]], h))
        pruned = should_prune([d.score for d in done.values()], trial.prune_below)
        if pruned:
            ledger.close()

        if self.on_instance is not None and done:
            self._hook(trial, len(done), ledger.charged)
        try:
            for c in self.engine.generate_iter(prompts, params, max_in_flight=self.max_in_flight,
                                               ledger=ledger, prompt_tokens=prompt_counts):
                pos = todo[c.index]
                iid = ids[pos]
                done[pos] = _Done(self._score(self._by_id[iid], c), c.prompt_tokens,
                                  c.completion_tokens)
                self._record(trial, iid, done[pos], unsettled_tokens=c.unsettled_tokens,
                             holds=[_hold_key(trial.id, run, s) for s in ledger.seqs_for(c.index)],
                             completion=c.text if isinstance(c.text, str) else list(c.text),
                             finish_reason=c.finish_reason, error=c.error)
                if self.cache is not None:
                    self.cache.put(prompts[c.index], params, c)
                if not pruned and should_prune([d.score for d in done.values()],
                                               trial.prune_below):
                    pruned = True
                    ledger.close()  # send nothing more; requests in flight still settle
                self._hook(trial, len(done), ledger.charged)
        except BaseException as exc:
            ledger.keep_open_holds()  # requests cut off mid-flight may have been billed
            if not isinstance(exc, Exception):
                raise
            partial = self._result(trial, ids, done, ledger.charged, TrialStatus.FAILED, t0,
                                   error=f"{type(exc).__name__}: {exc}")
            raise TrialEvaluationError(
                f"trial {trial.id} failed after {len(done)}/{r} instances "
                f"({partial.tokens} tokens charged): {exc}", partial) from exc

        status = (TrialStatus.COMPLETE if len(done) >= r else
                  TrialStatus.PRUNED if pruned else TrialStatus.PARTIAL)
        return self._result(trial, ids, done, ledger.charged, status, t0)

    def _from_cache(self, trial: Trial, ids: list[str], todo: list[int], prompts: list[Any],
                    params: SamplingParams, done: dict[int, _Done]
                    ) -> tuple[list[int], list[Any]]:
        """Answer what the response cache can (0 tokens); the rest still to send."""
        assert self.cache is not None
        left_pos, left_prompts = [], []
        for pos, prompt in zip(todo, prompts, strict=True):
            c = self.cache.get(prompt, params)
            if c is None:
                left_pos.append(pos)
                left_prompts.append(prompt)
                continue
            iid = ids[pos]
            done[pos] = _Done(self._score(self._by_id[iid], c), reused_tokens=c.reused_tokens)
            self._record(trial, iid, done[pos], source="cache", completion=c.text,
                         finish_reason=c.finish_reason)
        return left_pos, left_prompts

    def _write_hold(self, trial: Trial, run: str, instance_id: str, hold: Hold) -> None:
        """Write-ahead: the hold is in the journal before its request is sent."""
        if self.journal is not None:
            self.journal.append({"type": "hold", "key": _hold_key(trial.id, run, hold.seq),
                                 "trial_id": trial.id, "instance_id": instance_id,
                                 "tokens": hold.tokens, "time": time.time()})

    def _hook(self, trial: Trial, n: int, spent: int) -> None:
        if self.on_instance is None:
            return
        try:
            self.on_instance(trial, n, spent)
        except Exception as e:  # noqa: BLE001 - progress must never break a trial
            log.warning("on_instance hook failed: %s", e)

    @staticmethod
    def _result(trial: Trial, ids: list[str], done: dict[int, _Done], charged: int,
                status: TrialStatus, t0: float, error: str | None = None) -> TrialResult:
        order = sorted(done)
        scores = [done[p].score for p in order]
        prompt = sum(done[p].prompt_tokens for p in order)
        completion = sum(done[p].completion_tokens for p in order)
        return TrialResult(
            score=(sum(scores) / len(scores)) if scores else None,
            prompt_tokens=prompt, completion_tokens=completion,
            unsettled_tokens=max(0, charged - prompt - completion),
            reused_tokens=sum(done[p].reused_tokens for p in order),
            n_evaluated=len(order), status=status,
            instance_ids=[ids[p] for p in order], instance_scores=scores, error=error,
            wall_time_s=time.monotonic() - t0)


def config_identity(config: dict[str, Any]) -> str:
    """Two trials measure the same thing when their (canonical) configs are equal."""
    return json.dumps(config, sort_keys=True, default=str)


def _hold_key(trial_id: int, run: str, seq: int) -> str:
    return f"hold:{trial_id}:{run}:{seq}"


def evaluate_config(task: Task, engine: Any, config: dict[str, Any], instance_ids: Sequence[str],
                    max_in_flight: int = 8) -> TrialResult:
    """Score one config on exactly these instances (no token limit, no journal); used for
    held-out evaluation before promotion."""
    ev = EngineEvaluator(task, engine, instance_ids, journal=None, max_in_flight=max_in_flight)
    trial = Trial(id=-1, config=dict(config), fidelity=len(instance_ids), token_limit=2**62)
    return ev.evaluate(trial)
