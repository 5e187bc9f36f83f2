"""A study end to end, in-process: the orchestrator behind ``ecotune tune``/``resume``/``promote``.

:func:`run_tune` runs a :class:`~ecotune.config.StudyConfig`: engine up and checked
(:mod:`ecotune.engines.session`), task and nested order built, budget checked against one
instance's worst case, optimizer made (or resumed) from the journal, trials run with MLflow
tracking (:mod:`ecotune.tracking.callback`) and a progress display, and the winner
optionally promoted in the MLflow registry after a held-out comparison with the current
champion (:mod:`ecotune.tracking.promotion`).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ecotune.best import best_in_journal
from ecotune.config import (  # noqa: F401 - the study API, re-exported
    CONFIG_KEYS,
    LocalEngine,
    StudyConfig,
    StudyConfigError,
    StudyError,
    config_from_journal,
    load_study_config,
    validate_study_config,
    with_overrides,
)
from ecotune.construct import (  # noqa: F401 - default_space, study_space: the study API
    build_optimizer,
    cost_prior_config,
    default_space,
    study_space,
)
from ecotune.engines import EngineError
from ecotune.engines.session import engine_session
from ecotune.journal import JournalError, open_journal
from ecotune.space import SearchSpace, SearchSpaceError
from ecotune.tasks import TaskDataError, make_task
from ecotune.tasks.base import Task
from ecotune.tracking.callback import TrackingCallback, make_tracker
from ecotune.tracking.promotion import run_promotion
from ecotune.warmstart import WarmStartError


# ---------------------------------------------------------------------------------- pieces
def build_task(cfg: StudyConfig) -> tuple[Task, list[str]]:
    """The task and its nested order; checks the fidelity range fits the data."""
    from ecotune.subsets import SubsetError, build_subsets, nested_order

    try:
        task = make_task(cfg.task)
        instances = task.instances()
    except (TaskDataError, ValueError, KeyError, FileNotFoundError) as e:
        raise StudyConfigError(f"task {cfg.task.name!r}: {e}") from None
    n = len(instances)
    if cfg.r_max > n:
        raise StudyConfigError(f"r_max ({cfg.r_max}) is larger than task {task.key!r} "
                               f"({n} instances); lower r_max")
    if cfg.promotion.enabled and cfg.r_max + cfg.promotion.held_out > n:
        raise StudyConfigError(
            f"promotion needs {cfg.promotion.held_out} held-out instances after r_max "
            f"({cfg.r_max}) but task {task.key!r} has {n}; lower promotion.held_out or r_max")
    order = nested_order(instances, cfg.seed)
    try:
        build_subsets(task, cfg.r_max, cfg.seed, cfg.subsets_uri)
    except SubsetError as e:
        raise StudyError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - storage (S3) errors
        raise StudyError(f"cannot write subsets to {cfg.subsets_uri}: {e}") from e
    return task, order


def _low(space: SearchSpace, fixed: dict[str, Any], name: str, default: int) -> int:
    p = space.params.get(name)
    if p is not None and hasattr(p, "low"):
        return int(p.low)
    if p is not None and hasattr(p, "choices"):
        return int(min(p.choices))
    return int(fixed.get(name, default))


def best_from_journal(records: list[dict[str, Any]], r_max: int) -> tuple[dict | None, float | None]:
    """(config, score) of the best trial in a journal (as ``opt.best``: :mod:`ecotune.best`)."""
    return best_in_journal(records, r_max)


# ---------------------------------------------------------------------------------- run
def _printer(stream: TextIO) -> Any:
    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)
    return say


def run_tune(config: StudyConfig, resume: bool = False, *, stream: TextIO | None = None,
             live: bool | None = None) -> dict[str, Any]:
    """Run (or resume) a study end to end; returns its summary (see module docstring).

    Raises:
        StudyConfigError: the config does not fit the task/budget, or a journal exists
            (new study) / is missing (resume).
        StudyError: engine, storage or journal failures.
        KeyboardInterrupt: passed through; the journal stays consistent for ``resume``.
    """
    cfg = config
    stream = stream or sys.stdout
    say = _printer(stream)
    _check_journal(cfg, resume)
    task, order = build_task(cfg)
    try:
        space, fixed = study_space(cfg, task)
    except SearchSpaceError as e:
        raise StudyConfigError(f"search_space: {e}") from None
    with engine_session(cfg, say) as (engine, engine_spec):
        _check_budget(cfg, task, order, space, fixed, engine)
        opt, spec, tags = _make_optimizer(cfg, task, order, engine, engine_spec)
        tracker = make_tracker(cfg) if cfg.tracking.enabled else None
        summary, progress = _run_trials(cfg, opt, task, order, engine, engine_spec, tracker,
                                        spec, tags, resume, stream, live)
        _finish(cfg, summary, progress, task, engine, engine_spec, order, tracker, say)
    return summary


def _check_journal(cfg: StudyConfig, resume: bool) -> None:
    """A new study needs an empty journal, a resumed one an existing journal."""
    juri = cfg.journal_uri
    try:
        records = open_journal(juri).records()
    except Exception as e:  # noqa: BLE001 - local and S3 errors alike
        raise StudyError(f"cannot read journal {juri}: {e}") from e
    if records and not resume:
        raise StudyConfigError(
            f"a study journal already exists at {juri}; run `ecotune resume --config <file>` "
            "to continue it, or change `name` (or `journal`) to start a new study")
    if resume and not records:
        raise StudyConfigError(f"nothing to resume: no journal at {juri}; start the study "
                               "with `ecotune tune --config <file>`")


def _check_budget(cfg: StudyConfig, task: Task, order: list[str], space: SearchSpace,
                  fixed: dict[str, Any], engine: Any) -> None:
    """Refuse a budget below one instance's worst case (exact prompt tokens)."""
    inst = {i.id: i for i in task.instances()}
    small = {**cost_prior_config(task, space, fixed),
             "few_shot": _low(space, fixed, "few_shot", task.default_few_shot)}
    try:
        p_min = engine.count_prompt_tokens([task.build_prompt(inst[order[0]], small)])[0]
    except EngineError as e:
        raise StudyError(f"engine failed counting prompt tokens: {e}") from e
    m_min = _low(space, fixed, "max_tokens", task.default_max_tokens)
    worst = int(p_min) + m_min
    if cfg.budget_tokens < worst:
        raise StudyConfigError(
            f"budget_tokens ({cfg.budget_tokens}) is below the worst case of a single "
            f"instance ({p_min} prompt + {m_min} max_tokens = {worst} tokens); raise "
            f"budget_tokens (a useful study needs at least r_max x that, about "
            f"{worst * cfg.r_max:,})")


def _make_optimizer(cfg: StudyConfig, task: Task, order: list[str], engine: Any,
                    engine_spec: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """The study's optimizer, new or resumed from its journal, built as the pipeline builds
    it (:func:`ecotune.construct.build_optimizer`); with the spec and tags that tracking
    records."""
    try:
        opt = build_optimizer(cfg, task, engine=engine, order=order, model=engine_spec["model"])
    except EngineError as e:
        raise StudyError(f"engine failed counting prompt tokens: {e}") from e
    except JournalError as e:
        raise StudyConfigError(f"{e}; resume with the config the study was started with "
                               "(or `ecotune resume --journal PATH`)") from e
    except WarmStartError as e:  # warm_start.journal names no readable study
        raise StudyConfigError(str(e)) from e
    except ValueError as e:
        raise StudyConfigError(str(e)) from e
    head = opt.state.header_extra
    return opt, head["spec"], head["tags"]


def _run_trials(cfg: StudyConfig, opt: Any, task: Task, order: list[str], engine: Any,
                engine_spec: dict[str, Any], tracker: Any, spec: dict[str, Any],
                tags: dict[str, str], resume: bool, stream: TextIO,
                live: bool | None) -> tuple[dict[str, Any], Any]:
    """The trial loop, with tracking and the progress display; returns the summary and
    the display (which prints the final table)."""
    from ecotune.cache import ResponseCache
    from ecotune.progress import StudyProgress
    from ecotune.study_loop import run_study
    from ecotune.trial_runner import EngineEvaluator

    callbacks: list[Any] = []
    if tracker is not None:
        tracker.on_study_start(cfg.name, spec, tags)
        if resume:
            tracker.sync_from_journal(open_journal(cfg.journal_uri).records())
        callbacks.append(TrackingCallback(tracker))
    progress = StudyProgress(cfg.budget_tokens, title=cfg.name, stream=stream, live=live)
    cache = (ResponseCache.open(cfg.cache_uri, engine_spec["model"],
                                seeded=bool(getattr(engine, "send_seed", False)))
             if cfg.cache_uri else None)
    evaluator = EngineEvaluator(task, engine, order[:cfg.r_max], journal=cfg.journal_uri,
                                max_in_flight=getattr(engine, "max_concurrency", 8),
                                on_instance=progress.on_instance, cache=cache)
    callbacks.append(progress)
    progress.start(opt, resumed=resume)
    try:
        summary = run_study(opt, progress.wrap(evaluator, opt), callbacks)
    finally:
        progress.stop()
    summary = {**summary, "study": cfg.name, "journal": cfg.journal_uri, "r_max": cfg.r_max,
               "task": task.key, "model": engine_spec["model"]}
    return summary, progress


def _finish(cfg: StudyConfig, summary: dict[str, Any], progress: Any, task: Task, engine: Any,
            engine_spec: dict[str, Any], order: list[str], tracker: Any, say: Any) -> None:
    """Promotion (when enabled) and the summary table."""
    extra: dict[str, Any] = {"journal": cfg.journal_uri}
    if tracker is not None:
        extra["mlflow"] = f"{tracker.tracking_uri} (experiment {cfg.tracking.experiment})"
    if cfg.promotion.enabled:
        best = summary.get("best_config")
        summary["promotion"] = (
            {"promoted": False, "reason": "no scored trial"} if best is None
            else run_promotion(cfg, task, engine, engine_spec, order, best, say))
        p = summary["promotion"]
        extra["promotion"] = p["reason"]
        if "version" in p:
            extra["promotion"] = (
                f"{p['model_name']} v{p['version']} {'+'.join(p['aliases'])}; "
                f"held-out {p['challenger_score']:.3f}"
                + (f" vs champion {p['champion_score']:.3f}"
                   if p.get("champion_score") is not None else "")
                + f" ({p['reason']})")
    progress.summary(summary, extra)


def run_promote(config: StudyConfig, *, stream: TextIO | None = None) -> dict[str, Any]:
    """Only the promotion step, for the best config in the study's journal."""
    cfg = config
    say = _printer(stream or sys.stdout)
    try:
        records = open_journal(cfg.journal_uri).records()
    except Exception as e:  # noqa: BLE001
        raise StudyError(f"cannot read journal {cfg.journal_uri}: {e}") from e
    if not records:
        raise StudyConfigError(f"no journal at {cfg.journal_uri}: run `ecotune tune` first")
    best, score = best_from_journal(records, cfg.r_max)
    if best is None:
        raise StudyError(f"{cfg.journal_uri}: no scored trial to promote")
    if not cfg.promotion.enabled:
        cfg = with_overrides(cfg, promotion={**cfg.promotion.model_dump(), "enabled": True})
    task, order = build_task(cfg)
    with engine_session(cfg, say) as (engine, engine_spec):
        out = run_promotion(cfg, task, engine, engine_spec, order, best, say)
    say(f"promotion: {out['model_name']} v{out['version']} aliases={','.join(out['aliases'])} "
        f"held-out score {out['challenger_score']:.3f} (tuning score {score:.3f}); "
        f"{out['reason']}")
    return {"best_config": best, "best_score": score, "promotion": out}
