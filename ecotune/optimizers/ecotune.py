"""The EcoTune optimizer: GP surrogate + token-aware EI + budget control.

Each ask fits a GP, scores candidate (config, fidelity) pairs by EI per expected token and
picks the fidelity; when T̂ (eq. 8) affords at most one more full trial, it goes to the best
predicted config at r_max, so a study ends with one measured there (where trials tell their
instance scores, after a rung: the best configs promoted one level first, the best of them
finished; ``final_trial``, :mod:`ecotune.optimizers.final_trial`). Two acquisitions:

* ``lookahead`` (default): one GP over configs, each config's prefix mean at its largest r
  as an unbiased observation with binomial noise p(1 − p)/r; EI of the posterior mean after
  Δ more instances (``screen_value="finish"``: the improvement they buy once the configs
  whose screen comes out above the incumbent are finished), per token of those Δ instances
  plus, below r_max, the tokens that finishing the config would take times the chance the
  screen comes out above the incumbent (``completion_cost``; promotion keeps what was
  measured); the scale-free fidelity rule with τ as a ratio (default 0.5). Losing trials are
  stopped early (``prune_below`` = the incumbent's lower bound, :mod:`ecotune.pruning`).
  Scores told without per-instance scores get the binomial noise times a κ chosen by
  marginal likelihood (``noise``), lower levels mapped to the r_max scale (``calibrate``).
* ``paper``: the paper's multi-fidelity GP, eq. 3 and eq. 4 with an absolute τ on EI per
  1,000 tokens at r_max (default 0.002); :mod:`ecotune.optimizers.paper_step`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecotune.acquisition import (
    choose_fidelity_ratio,
    completion_cost,
    fidelity_levels,
    log_finish_ei,
    log_local_penalty,
    log_lookahead_ei,
    lookahead_std,
)
from ecotune.calibration import SLOPE_PRIOR, LevelMaps, apply_level_maps, fit_level_maps
from ecotune.candidates import candidate_set
from ecotune.optimizers.base import (
    Optimizer,
    Proposal,
    encoded_key,
    per_config,
    told_without_instance_scores,
)
from ecotune.optimizers.final_trial import RESERVE, FinalTrial
from ecotune.optimizers.paper_step import PaperStep
from ecotune.prompt_tokens import increment_prompt_tokens
from ecotune.pruning import incumbent_floor
from ecotune.shared_instances import config_instance_scores, shared_instance_kappa, two_way_levels
from ecotune.surrogate import (
    fidelity_to_unit,
    fit_scaled_noise_gp,
    fit_single_fidelity_gp,
    hyperparameters,
    hyperparameters_from_json,
    hyperparameters_to_json,
    posterior_mean_std,
    score_noise,
)
from ecotune.trial import TrialStatus

ACQUISITIONS = ("lookahead", "paper")
SCREEN_VALUES = ("finish", "lookahead")
NOISES = ("auto", "binomial", "scaled", "shared", "adjusted")
FINAL_TRIALS = ("paper", "last", "rung", "auto")
DEFAULT_TAU = {"lookahead": 0.5, "paper": 0.002}


class EcoTuneOptimizer(PaperStep, FinalTrial, Optimizer):
    """Token-aware multi-fidelity Bayesian optimisation.

    Args:
        acquisition: ``lookahead`` (default) or ``paper`` (see the module docstring).
        tau: the fidelity rule's threshold: a ratio for ``lookahead`` (default 0.5), EI per
            1,000 tokens at r_max for ``paper`` (default 0.002).
        early_stopping: stop trials that can no longer beat the incumbent (``lookahead``).
        screen_value: what a (config, fidelity) is worth (``lookahead``): ``lookahead``
            (default), the EI of the posterior mean after the screen; ``finish``, the
            improvement of the incumbent once the configs whose screen comes out above it
            are finished (:func:`ecotune.acquisition.log_finish_ei`). Measured against each
            other on the peer benchmark (docs/benchmarks.md): ``finish`` wins on Borehole
            and WingWeight, loses on mf2 Hartmann6, ties on the unbiased and LLM problems.
        completion_cost: price a screen below r_max with the tokens finishing the config
            would take if the screen comes out above the incumbent (``lookahead``; default
            on, chosen on the peer benchmark; :func:`ecotune.acquisition.completion_cost`).
            Off: a screen costs its own instances only.
        n_init: initial Sobol configurations (default: max(4, d // 2 + 2)).
        init_share: go on with the initial design, past ``n_init``, until this share of the
            budget (or of ``max_trials``, if set) is spent (0: ``n_init`` configs only).
            Default 0.25 (SMAC3's cap on its initial design), chosen on the peer benchmark
            (docs/benchmarks.md): a broad, cheap start like Hyperband's first rungs wins
            on the unbiased (LLM-like) problems and puts most demo trials below r_max; it
            loses on some biased ones.
        initial_configs: configs to run first, before the Sobol design (e.g. the HELM
            default). With ``candidates``, each is replaced by its nearest candidate.
        init_fidelity: instances each initial-design config is scored on. Default r_min
            (Hyperband's first rung), chosen on the peer benchmark (docs/benchmarks.md)
            over the second fidelity level: most configs of the LLM tables score near 0,
            and a cheap screen finds that out for more configs.
        noise: a score's noise over r instances (``lookahead``): ``binomial``, p(1 − p)/r
            (one config's own sampling noise); ``scaled``, that times κ chosen by marginal
            likelihood (:func:`~ecotune.surrogate.fit_scaled_noise_gp`; configs share their
            instances, so their scores err together); ``shared``, κ measured from the shared
            instances (:mod:`ecotune.shared_instances`; scaled until two configs share one);
            ``adjusted``, as ``shared``, and each config's score its two-way level on the
            longest prefix (its screen corrected for how easy its instances were);
            ``auto`` (default): binomial while every trial told its instance scores (LLM
            trials do), else scaled. Measured on the peer benchmark (docs/benchmarks.md).
        calibrate: with scaled noise, map each lower level onto the r_max scale first
            (:mod:`ecotune.calibration`). Default on, measured on the peer benchmark.
        slope_prior: weight of the calibration's prior that a level's line has slope 1
            (:mod:`ecotune.calibration`); 0 is plain least squares.
        final_trial: when the final full trial of eq. 8 is asked: ``paper``, once
            T̂ = ⌊B_remain / E[T]⌋ ≤ 1 (or two worst cases no longer fit); ``last``, once the
            step chosen otherwise would leave less than the final's expected tokens, so the
            rest of the budget informs the final's pick instead of following it; ``rung``,
            when ``paper`` would, after a rung: the best configs promoted to the highest
            level the budget allows, the best of them finished (:mod:`.final_trial`);
            ``auto`` (default), ``rung`` while every trial told its instance scores (a
            screen's error is then sampling noise, which more instances shrink), else
            ``paper`` (a deterministic lower level, where more instances only move along
            its bias). Chosen on the peer benchmark (docs/benchmarks.md): ``rung`` lost on
            three biased problems, ``auto`` passed a confirmation on fresh seeds.
        rung_reserve: the rung spends only while this many times the final's expected
            tokens stay in hand (>= 1; :data:`~.final_trial.RESERVE` by default).
        n_levels: fidelity levels considered between r_min and r_max.
        n_candidates: Sobol candidates per ask (plus local ones around the incumbents).
    """

    name = "ecotune"
    single_fidelity = False
    candidate_aware = True

    def __init__(self, *args: Any, acquisition: str = "lookahead", tau: float | None = None,
                 early_stopping: bool = True, completion_cost: bool = True,
                 screen_value: str = "lookahead",
                 n_init: int | None = None, init_share: float = 0.25, n_levels: int = 4,
                 n_candidates: int = 512, init_fidelity: int | None = None,
                 noise: str = "auto", calibrate: bool = True,
                 slope_prior: float = SLOPE_PRIOR, final_trial: str = "auto",
                 rung_reserve: float = RESERVE,
                 initial_configs: list[dict[str, Any]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
        tau = DEFAULT_TAU[acquisition] if tau is None else float(tau)
        if tau < 0:
            raise ValueError("tau must be >= 0")
        self.acquisition, self.tau = acquisition, tau
        self.early_stopping = bool(early_stopping) and acquisition == "lookahead"
        self.completion_cost = bool(completion_cost) and acquisition == "lookahead"
        if screen_value not in SCREEN_VALUES:
            raise ValueError(f"screen_value must be one of {SCREEN_VALUES}, got {screen_value!r}")
        self.screen_value = screen_value
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.noise = noise
        if final_trial not in FINAL_TRIALS:
            raise ValueError(f"final_trial must be one of {FINAL_TRIALS}, got {final_trial!r}")
        self.final_trial = final_trial
        if not rung_reserve >= 1.0:
            raise ValueError(f"rung_reserve must be >= 1, got {rung_reserve}")
        self.rung_reserve = float(rung_reserve)
        self.noise_scale = 1.0  # κ of the last fit (1 under binomial noise)
        self.calibrate, self.slope_prior = bool(calibrate), float(slope_prior)
        if self.slope_prior < 0:
            raise ValueError(f"slope_prior must be >= 0, got {slope_prior}")
        self.level_maps: LevelMaps = {}  # of the last fit (ecotune.calibration)
        self.n_init = int(n_init if n_init is not None else max(4, self.space.dim // 2 + 2))
        if not 0.0 <= init_share < 1.0:
            raise ValueError(f"init_share must be in [0, 1), got {init_share}")
        self.init_share = float(init_share)
        self._searching = False  # a trial past the initial design was asked
        self.levels = fidelity_levels(self.r_min, self.r_max, n_levels)
        self.n_candidates = n_candidates
        self.initial_configs = [self.space.canonical(self.space.validate_config(c))
                                for c in (initial_configs or [])]
        self.init_fidelity = int(init_fidelity if init_fidelity is not None else self.r_min)
        if not self.r_min <= self.init_fidelity <= self.r_max:
            raise ValueError(f"init_fidelity must be in [r_min, r_max] = [{self.r_min}, "
                             f"{self.r_max}], got {self.init_fidelity}")
        self._hyper: dict | None = None
        self._fitted_n = self._fitted_full = 0
        self._final_done = False
        self._rung: dict[str, Any] | None = None  # the final rung's plan (final_trial="rung")
        self.last_decision: dict[str, Any] = {}
        self._options.update(tau=tau, n_init=self.n_init, n_levels=n_levels,
                             initial_configs=self.initial_configs, acquisition=acquisition,
                             early_stopping=self.early_stopping,
                             completion_cost=self.completion_cost,
                             screen_value=screen_value, init_share=self.init_share,
                             init_fidelity=self.init_fidelity, noise=noise,
                             calibrate=self.calibrate, slope_prior=self.slope_prior,
                             final_trial=final_trial, rung_reserve=self.rung_reserve)

    # ------------------------------------------------------------------ proposal
    def _propose(self) -> Proposal | None:
        X, n, y = self.state.observations()
        if self.state.n_asked < len(self.initial_configs):
            cfg = dict(self.initial_configs[self.state.n_asked])
            if self.state.candidates is not None:  # e.g. a default that is not among the presets
                cfg = self._unseen_candidate(cfg)
            return cfg, self.init_fidelity, {"phase": "init"}
        if ((len(y) + len(self.state.pending) < self.n_init + len(self.initial_configs)
                or len(y) < 2 or self._initial_budget_left())
                and not (len(y) >= 2 and self._candidates_used_up())):
            cfg = self._sobol_config()
            if self.state.candidates is not None:
                cfg = self._unseen_candidate(cfg)
            return cfg, self.init_fidelity, {"phase": "init"}
        if self.acquisition == "paper":
            return self._paper_step(X, n, y)
        return self._lookahead_step()

    def _model_state(self) -> dict[str, Any] | None:
        """What the next ask's fit starts from and reuses when it does not refit (None
        before the first fit: the initial design learns nothing)."""
        if self._hyper is None:
            return None
        return {"hyper": hyperparameters_to_json(self._hyper), "fitted_n": self._fitted_n,
                "fitted_full": self._fitted_full, "noise_scale": self.noise_scale,
                "level_maps": [[r, *line] for r, line in self.level_maps.items()]}

    def _restore_model_state(self, state: dict[str, Any]) -> None:
        self._hyper = hyperparameters_from_json(state["hyper"])
        self._fitted_n, self._fitted_full = int(state["fitted_n"]), int(state["fitted_full"])
        self.noise_scale = float(state["noise_scale"])
        self.level_maps = {int(r): (float(a), float(c)) for r, a, c in state["level_maps"]}

    def _candidates_used_up(self) -> bool:
        """Every candidate has had a trial (the initial design would only repeat one)."""
        used = self._used_keys() if self.state.candidate_X is not None else None
        return used is not None and all(encoded_key(x) in used for x in self.state.candidate_X)

    def _initial_budget_left(self) -> bool:
        """The search has not started and the initial design has spent and asked less than
        ``init_share`` of the budget and of ``max_trials`` (the search gets the rest of
        both). A warm-started study does not widen its design: the earlier study explored."""
        budget = self.state.budget
        if (self._searching or self.state.warm_start is not None
                or self.state.tokens_used >= self.init_share * budget.budget_tokens):
            return False
        return budget.max_trials is None or self.state.n_asked < self.init_share * budget.max_trials

    def _on_ask(self, trial, meta: dict[str, Any]) -> None:
        self._searching = self._searching or meta.get("phase") != "init"
        self._replay_rung(trial, meta)

    def prune_below(self) -> float | None:
        """The incumbent's lower bound at r_max: a trial that cannot reach it stops."""
        if not self.early_stopping:
            return None
        full = [r for r in self.state.results.values() if r.status != TrialStatus.FAILED
                and r.score is not None and r.n_evaluated >= self.r_max]
        if not full:
            return None
        best = max(full, key=lambda r: r.score)  # the first of equals, as before
        scores = best.instance_scores or [float(best.score)] * best.n_evaluated
        return incumbent_floor(scores)

    # ------------------------------------------------------------------ lookahead
    def _lookahead_step(self) -> Proposal | None:
        X, n, y = per_config(*self.state.observations())
        scaled = self._scaled_noise()
        n_full = int((n >= self.r_max).sum())  # a new full score moves the level maps
        refit = (self._hyper is None or len(y) < 30 or len(y) >= 1.1 * self._fitted_n
                 or (scaled and self.calibrate and n_full != self._fitted_full))
        start = self._hyper
        if refit and scaled:  # κ from every score told (``noise``), fitted
            X_all, n_all, y_all = self.state.observations()  # from the prior: resumes agree
            if self.calibrate:
                self.level_maps = fit_level_maps(X_all, n_all, y_all, self.r_max, self.slope_prior)
            y_all = apply_level_maps(self.level_maps, n_all, y_all)
            kappa = (shared_instance_kappa(list(self._instance_scores().values()))
                     if self.noise in ("shared", "adjusted") else None)
            self.noise_scale = kappa or fit_scaled_noise_gp(X_all, y_all, n_all)[1]
            start = None
        y = apply_level_maps(self.level_maps, n, y)
        if self.noise == "adjusted":  # each screen on the longest prefix's instances
            levels = two_way_levels(self._instance_scores())
            y = np.array([levels.get(encoded_key(x), v) for x, v in zip(X, y, strict=True)])
        model = fit_single_fidelity_gp(X, y, n, start, refit=refit,
                                       noise_scale=self.noise_scale)
        if refit:
            self._hyper, self._fitted_n, self._fitted_full = hyperparameters(model), len(y), n_full
        mu_obs, _ = posterior_mean_std(model, X)
        f_star = float(mu_obs.max())
        C = self._candidates(X, mu_obs)
        levels, L = self.levels, len(self.levels)
        done = self._measured_counts(C)                         # (len(C),)
        delta = levels[None, :] - done[:, None]                 # instances still to buy
        valid = delta > 0
        if not valid.any():
            return None
        mu, sd = posterior_mean_std(model, C)
        noise = self.noise_scale * score_noise(np.repeat(mu, L), np.maximum(delta, 1).reshape(-1))
        xi = self.state.budget.eta * float(np.std(y) if len(y) > 1 else 0.0)
        value = log_finish_ei if self.screen_value == "finish" else log_lookahead_ei
        log_ei = value(np.repeat(mu, L), np.repeat(sd, L), noise, f_star, xi)
        configs = [self.space.decode(c) | self.fixed for c in C]
        max_tok = np.repeat([self.state.max_completion(cfg) for cfg in configs], L)
        cost = self.state.cost_model.predict(np.repeat(C, L, axis=0), max_tok,
                                       np.maximum(delta, 1).reshape(-1),
                                       prompt_tokens=increment_prompt_tokens(
                                           self.state.prompt_tokens, configs, done, levels))
        step_cost = cost.reshape(len(C), L)  # a step's own instances (not finishing)
        if self.completion_cost:
            cost = completion_cost(cost.reshape(len(C), L), np.repeat(mu, L),
                                   lookahead_std(np.repeat(sd, L), noise), f_star + xi
                                   ).reshape(-1)
        penalty = self._pending_penalty(C, model)
        log_eipt = (log_ei - np.log(cost)).reshape(len(C), L) + penalty[:, None]
        log_eipt = np.where(valid, log_eipt, -np.inf)
        budget = self.state.budget
        cool = max(budget.remain, 0) / budget.budget_tokens  # EI-cool, see paper
        utility = log_eipt + (1.0 - cool) * np.log(cost).reshape(len(C), L)
        c = int(np.unravel_index(int(np.argmax(utility)), utility.shape)[0])
        li = choose_fidelity_ratio(log_eipt[c], self.tau)
        final = self._final_choice(model, X, n, f_star, lambda P: posterior_mean_std(model, P),
                                   float(step_cost[c, li]))
        if final is not None:
            return final
        self.last_decision = {
            "phase": "promote" if done[c] > 0 else "explore", "f_star": f_star,
            "eta": budget.eta, "fidelity": int(levels[li]), "already": int(done[c]),
            "t_hat": budget.t_hat(float(cost.reshape(len(C), L)[c, -1])),
            "eipt_per_1k": float(np.exp(log_eipt[c, li]) * 1000.0)}
        return self.space.decode(C[c]), int(levels[li]), dict(self.last_decision)

    def _scaled_noise(self) -> bool:
        """Whether the surrogate's noise is scaled by a fitted κ (see ``noise``)."""
        if self.noise != "auto":
            return self.noise in ("scaled", "shared", "adjusted")
        return told_without_instance_scores(self.state)

    def _instance_scores(self) -> dict[tuple[float, ...], dict[str, float]]:
        """Each config's instance scores, keyed as the surrogate's configs are."""
        trials = self.state.trials
        return config_instance_scores((encoded_key(self.space.encode(trials[i].config)), r)
                                      for i, r in self.state.results.items())

    def _candidates(self, X: np.ndarray, mu_obs: np.ndarray) -> np.ndarray:
        """Sobol + local refinement around the best three, plus every observed config (so
        promotions compete with new configs); or the finite candidate set."""
        if self.state.candidate_X is not None:
            return self.state.candidate_X
        C = candidate_set(self.space, self._rng(self.state.n_asked, 1),
                          centres=X[np.argsort(-mu_obs)[:3]], n_global=self.n_candidates)
        return np.vstack([C, X])

    def _measured_counts(self, C: np.ndarray) -> np.ndarray:
        """Instances each candidate config already has (or gets from a running trial)."""
        most: dict[tuple[float, ...], int] = {}
        for tid, t in self.state.trials.items():
            res = self.state.results.get(tid)
            if res is not None and (res.status == TrialStatus.FAILED or res.n_evaluated == 0):
                continue  # a failed trial measured nothing
            k = encoded_key(self.space.encode(t.config))
            most[k] = max(most.get(k, 0), t.fidelity if res is None else res.n_evaluated)
        return np.array([most.get(encoded_key(c), 0) for c in C], float)

    def _pending_penalty(self, Z: np.ndarray, model, fidelity: bool = False) -> np.ndarray:
        """Local penalisation of running trials' points so parallel asks spread out."""
        if not self.state.pending:
            return np.zeros(len(Z))
        P = np.array([np.append(self.space.encode(t.config),
                                [fidelity_to_unit(t.fidelity, self.r_min, self.r_max)]
                                if fidelity else [])
                      for t in self.state.pending.values()])
        return log_local_penalty(Z, P, model)
