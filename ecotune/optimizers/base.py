"""The ask/tell contract every optimizer follows: a proposer over a shared study state.

An optimizer proposes trials (``ask``) and learns from their results (``tell``); it never
knows where or how a trial ran. It is two objects:

* the **study state** (:class:`~ecotune.optimizers.state.StudyState`, ``opt.state``): the
  journal and its replay, the hard token budget (each trial's ``token_limit``), the cost
  model, the trials, their results and the incumbent. All optimizers share it, so every
  one of them is charged and resumed the same way;
* the **proposer** (this class): which config to try next, at which fidelity, and when a
  running trial may stop early. Each optimizer is one subclass.

The subclass contract (all a new optimizer needs):

* ``name`` (journal and registry name) and, where they differ from the defaults,
  ``single_fidelity`` and ``candidate_aware`` (class attributes);
* ``__init__(self, state, *, own options..., **kwargs)`` calling
  ``super().__init__(state, **kwargs)`` and recording its options in ``self._options``
  (they go into the journal header);
* ``_propose() -> (config, fidelity, meta) | None``: the next trial (None: done). ``meta``
  is journalled with the ask and handed back to ``_on_ask`` on replay;
* optionally ``prune_below()`` (the score a new trial must still be able to reach),
  ``_on_ask(trial, meta)`` and ``_on_tell(trial, result)``: keep the proposer's own state;
  replaying a journal calls them too, in journal order, so they must not decide anything
  the journal does not record;
* optionally ``_model_state()`` and ``_restore_model_state(state)``: what the proposer
  learned that the trials alone do not give back (a GP's warm-start hyperparameters), as
  JSON; journalled with each ask (``meta["model"]``) and restored before ``_on_ask``, live
  and on replay alike, so a study resumed in a fresh process (the pipeline: one per ask)
  asks what one process asks.

A proposer reads the study through ``self.state`` (trials, results, pending, budget,
cost model, ``observations()``, ``n_asked``) and never writes it; ``self.space``,
``self.r_min``, ``self.r_max``, ``self.seed`` and ``self.fixed`` are the study's constants.
Helpers: ``_rng(*salt)`` and ``_sobol_config()`` (seeded, so replays reproduce them),
``nearest_candidate`` and ``_unseen_candidate`` (finite candidate sets).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecotune.optimizers.state import StudyState
from ecotune.trial import Trial, TrialResult, TrialStatus

Proposal = tuple[dict[str, Any], int, dict[str, Any]]  # (config, fidelity, meta)


class Optimizer:
    """Base of all optimizers: ask/tell over a :class:`StudyState`.

    Args:
        state: the study's state (see :func:`ecotune.optimizers.make_optimizer`, which
            builds it and opens the journal).

    Example:
        >>> opt = make_optimizer("random", space=space, budget_tokens=10_000, r_min=5,
        ...                      r_max=20)                                # doctest: +SKIP
        >>> trial = opt.ask()                                              # doctest: +SKIP
        >>> opt.tell(trial, TrialResult.for_trial(trial, score=0.5, tokens=900))  # doctest: +SKIP
    """

    name = "base"
    #: the fidelity every trial runs at (single-fidelity baselines use r_max).
    single_fidelity = True
    #: True if ``_propose`` itself picks among ``candidates`` (else proposals are snapped).
    candidate_aware = False

    def __init__(self, state: StudyState):
        if not isinstance(state, StudyState):
            raise TypeError("an optimizer is built over a StudyState (see make_optimizer)")
        self.state = state
        self.space, self.fixed = state.space, state.fixed
        self.r_min, self.r_max, self.seed = state.r_min, state.r_max, state.seed
        #: proposer settings recorded in the journal header (subclasses add theirs)
        self._options: dict[str, Any] = dict(state.options)
        self._tried: dict[tuple[float, ...], dict[str, Any]] = {}  # see _as_tried
        self._tried_n = 0

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> Trial | None:
        """The next trial to run, or None when the study is done (see ``stop_reason``).

        After a resume, trials that were asked but never told are handed out again first,
        with their original ids, so a runner can continue them.
        """
        state = self.state
        again = state.reissue()
        if again is not None:
            return again
        if state.check_stop() is not None:
            return None
        proposal = self._propose()
        if proposal is None:
            state.stop_reason = state.stop_reason or "exhausted"
            return None
        config, r, meta = proposal
        if state.candidates is not None and not self.candidate_aware:
            config = self.nearest_candidate(config)
        # canonical: settings inert in this config (sampling knobs under greedy decoding)
        # are dropped, so configs that decode identically are one config everywhere
        config = self.space.canonical({**self.fixed, **config})
        config = self._as_tried(config)
        trial = state.new_trial(config, r, prune_below=self.prune_below())
        if trial is None:
            return None
        model = self._model_state()
        if model is not None:
            meta = {**meta, "model": model}
        state.record_ask(trial, meta)
        self._replay_ask(trial, meta)
        return trial

    def tell(self, trial: Trial | int, result: TrialResult) -> None:
        """Report a trial's outcome. Every token it spent is charged, failed or not.

        ``result`` is what running the trial produced (an evaluator's
        :class:`~ecotune.trial.TrialResult`, or :meth:`TrialResult.for_trial` from a score
        and a token count).

        Raises:
            ValueError: the trial was never asked or already told, or the result cannot
                belong to it.
        """
        if not isinstance(result, TrialResult):
            raise TypeError(f"tell takes a TrialResult, got {type(result).__name__} "
                            "(TrialResult.for_trial builds one from a score and tokens)")
        tid = trial.id if isinstance(trial, Trial) else int(trial)
        self._on_tell(self.state.record_tell(tid, result), result)

    def _open(self) -> None:
        """Write the journal header, or replay the journal through this proposer's hooks."""
        self.state.open(self.state.header(self.name, self._options), self._replay_ask,
                        self._on_tell)

    def _replay_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        """An ask, live or from the journal: the model's state it carries, then ``_on_ask``."""
        if "model" in meta:
            self._restore_model_state(meta["model"])
        self._on_ask(trial, meta)

    # ------------------------------------------------------------------ results
    def best(self) -> tuple[dict[str, Any] | None, float | None]:
        """(config, score) of the best configuration (:meth:`StudyState.best`)."""
        return self.state.best()

    @property
    def stop_reason(self) -> str | None:
        """Why the study stopped (``budget``, ``max_trials``, ``converged``,
        ``failed_trials``, ``exhausted``), or None while it runs."""
        return self.state.stop_reason

    @property
    def tokens_used(self) -> int:
        return self.state.tokens_used

    @property
    def tokens_reused(self) -> int:
        """Tokens not bought again: cached answers and measurements kept across trials."""
        return self.state.tokens_reused

    def summary(self) -> dict[str, Any]:
        """The study in one dict (:meth:`StudyState.summary`)."""
        return self.state.summary(self.name)

    # ------------------------------------------------------------------ helpers
    def nearest_candidate(self, config: dict[str, Any]) -> dict[str, Any]:
        """The candidate nearest to ``config`` in the encoded space (Euclidean)."""
        cands, X = self.state.candidates, self.state.candidate_X
        assert cands is not None and X is not None
        d = ((X - self.space.encode(config)) ** 2).sum(axis=1)
        return dict(cands[int(np.argmin(d))])

    def _used_keys(self) -> set[tuple[float, ...]]:
        """Encoded keys of every config a trial has used."""
        return {encoded_key(self.space.encode(t.config)) for t in self.state.trials.values()}

    def _as_tried(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` exactly as an earlier trial ran it, if one ran the same encoded config.

        Proposers work on encoded points, and decode(encode(config)) can differ from the
        config in a float's last bit (about 1% of sampled configs of the paper's space);
        the trial runner keeps a config's measured instances by its exact value, so a
        promotion must ask the config as it was, or it would buy its instances again."""
        trials = self.state.trials
        if len(trials) != self._tried_n:  # index the trials asked since the last call
            for t in list(trials.values())[self._tried_n:]:
                self._tried.setdefault(encoded_key(self.space.encode(t.config)), t.config)
            self._tried_n = len(trials)
        return dict(self._tried.get(encoded_key(self.space.encode(config)), config))

    def _unseen_candidate(self, config: dict[str, Any]) -> dict[str, Any]:
        """The candidate nearest to ``config`` that no trial has used yet (the nearest
        one when all were used): an initial design over a finite set without repeats."""
        cands, X = self.state.candidates, self.state.candidate_X
        assert cands is not None and X is not None
        used = self._used_keys()
        d = ((X - self.space.encode(config)) ** 2).sum(axis=1)
        order = np.argsort(d, kind="stable")
        k = next((int(i) for i in order if encoded_key(X[i]) not in used), int(order[0]))
        return dict(cands[k])

    def _sobol_config(self) -> dict[str, Any]:
        """The config at this trial's position in the study's scrambled Sobol sequence
        (depends only on seed and trial id, so replays reproduce it)."""
        from scipy.stats import qmc

        engine = qmc.Sobol(d=self.space.dim, scramble=True, seed=self.seed)
        if self.state.n_asked:
            engine.fast_forward(self.state.n_asked)
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
        """The next (config, fidelity, meta), or None when this optimizer is done."""
        raise NotImplementedError

    def _model_state(self) -> dict[str, Any] | None:
        """The proposer's learned state the journal keeps with each ask (None: nothing)."""
        return None

    def _restore_model_state(self, state: dict[str, Any]) -> None:
        """Take back a state :meth:`_model_state` gave (live and on replay)."""

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        """Bookkeeping when a trial is asked (also called on replay)."""

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        """Learn from a result (also called on replay)."""


def encoded_key(x: np.ndarray) -> tuple[float, ...]:
    """A hashable identity for an encoded config."""
    return tuple(np.round(np.asarray(x, float), 9))


def per_config(X: np.ndarray, n: np.ndarray, y: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One observation per config (of ``StudyState.observations()``): its prefix mean over
    the most instances measured (the last of equals)."""
    best: dict[tuple[float, ...], tuple[np.ndarray, float, float]] = {}
    for x, k, s in zip(X, n, y, strict=True):
        key = encoded_key(x)
        if key not in best or k >= best[key][1]:
            best[key] = (x, k, s)
    if not best:
        return X, n, y
    xs, ns, ys = zip(*best.values(), strict=True)
    return np.stack(xs), np.array(ns, float), np.array(ys, float)


def told_without_instance_scores(state: StudyState) -> bool:
    """Whether a scored trial came without per-instance scores: a whole-evaluation score
    (e.g. a deterministic function at a fidelity), whose noise p(1 − p)/r does not
    describe, where every LLM trial tells the instance scores its mean is made of."""
    return any(not r.instance_scores for r in state.results.values()
               if r.score is not None and r.n_evaluated > 0 and r.status != TrialStatus.FAILED)
