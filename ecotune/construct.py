"""One path from a study config to its optimizer, wherever the study runs.

``ecotune tune`` (:mod:`ecotune.study`), the pipeline's components (``components._common``)
and the benchmark (:mod:`ecotune.bench.runs`) build their optimizers here, so the same
study config and seed ask the same trials in-process and in a pipeline run:

* the same search space, parameters in name order (a pipeline hands the config over as a
  protobuf Struct, whose keys come back sorted, and sampling follows the space's order);
  without one, the paper's space sized for the task (:func:`default_space`);
* the same fixed settings (``max_tokens`` pinned to the task's default when it is neither
  searched nor fixed), options and stopping rules;
* EcoTune's first trials are the warm start's configs (an earlier study's champion and
  best configs, :mod:`ecotune.warmstart`), then the HELM default when
  ``start_from_default`` (:func:`helm_first`); the warm start's prior observations go to
  the study state. What a study took is recorded in its journal header and a rebuild takes
  the recorded warm start (:func:`study_warm_start`), so every step of a pipeline run and a
  resumed study see the same, whatever became of the source;
* the same prompt-token facts. With an engine to count them, trials' worst cases use the
  exact prompt tokens of the first r_max instances (:class:`~ecotune.prompt_tokens.PromptTokens`)
  and the cost model's prior is the mean prompt tokens at the task's usual few-shot count
  (:func:`cost_prior_config`); without one, the prior is the default and worst cases use
  the cost model's cautious ceiling. The prior a study started with is recorded in its
  journal header and wins on every rebuild (:meth:`StudyState.open
  <ecotune.optimizers.state.StudyState.open>`), so every step of a pipeline run, and a
  resumed study, uses the one the study started with.

Example:
    >>> cfg = load_study_config("study.yaml")                    # doctest: +SKIP
    >>> task = make_task(cfg.task)                               # doctest: +SKIP
    >>> opt = build_optimizer(cfg, task, engine=engine)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ecotune.config import ECOTUNE_ONLY, StudyConfig
from ecotune.optimizers import make_optimizer
from ecotune.optimizers.base import Optimizer
from ecotune.space import SearchSpace, default_llm_space, helm_default
from ecotune.tasks.base import Task

log = logging.getLogger(__name__)

def default_space(task: Task) -> SearchSpace:
    """:func:`default_llm_space` sized for the task: ``max_tokens`` around the task default,
    ``few_shot`` up to the task's pool when the task uses in-context examples."""
    d = int(task.default_max_tokens)
    low, high = max(1, d // 4), min(2048, max(2 * d, 4))
    shots = getattr(task, "pool_size", None) or getattr(task, "max_shots", None)
    if shots is None and task.default_few_shot > 0:
        shots = max(task.default_few_shot, 5)
    return default_llm_space(max_tokens=(low, high), few_shot=int(shots) if shots else None)


def study_space(cfg: StudyConfig, task: Task) -> tuple[SearchSpace, dict[str, Any]]:
    """The search space (parameters in name order) and the fixed settings.

    Raises:
        SearchSpaceError: the config's search space is invalid.
    """
    if cfg.search_space:
        space = SearchSpace.from_dict(dict(sorted(cfg.search_space.items())))
    else:
        space = default_space(task)
    fixed = dict(cfg.fixed)
    if "max_tokens" not in space.params and "max_tokens" not in fixed:
        fixed["max_tokens"] = int(task.default_max_tokens)
    return space, fixed


def helm_first(space: SearchSpace, max_tokens: int | None) -> list[dict[str, Any]]:
    """EcoTune's initial configs when a study starts from the default: HELM's default
    configuration, clipped into ``space`` (a study never misses the default it should beat)."""
    return [helm_default(space, max_tokens)]


def cost_prior_config(task: Task, space: SearchSpace, fixed: dict[str, Any]) -> dict[str, Any]:
    """The config whose prompts size the cost model's prior: the fixed settings at the
    task's usual few-shot count (clipped into the space's few-shot range)."""
    base = dict(fixed)
    fs = space.params.get("few_shot")
    if fs is not None and hasattr(fs, "low"):
        base["few_shot"] = min(max(task.default_few_shot, int(fs.low)), int(fs.high))
    return base


def optimizer_options(cfg: StudyConfig, fixed: dict[str, Any]) -> dict[str, Any]:
    """The config's options for :func:`~ecotune.optimizers.make_optimizer` (study state and
    proposer alike); EcoTune-only keys go to EcoTune only."""
    options: dict[str, Any] = dict(
        max_trials=cfg.max_trials, max_failed_trials=cfg.max_failed_trials, eta0=cfg.eta0,
        lam=cfg.lam, patience=cfg.patience, fixed=fixed)
    for k in ("candidates", *ECOTUNE_ONLY):
        if getattr(cfg, k) is not None and (k == "candidates" or cfg.optimizer == "ecotune"):
            options[k] = getattr(cfg, k)
    return options


def tracking_header(cfg: StudyConfig, task: Task, space: SearchSpace, fixed: dict[str, Any],
                    model: str) -> dict[str, Any]:
    """What the journal header records for tracking (the spec logged as params, the run
    tags) and for ``ecotune resume --journal`` (the study config)."""
    spec = {k: v for k, v in cfg.dump().items() if k != "search_space"}
    spec.update(space=space.to_dict(), fixed=fixed, study=cfg.name, model=model)
    tags = {"ecotune.study": cfg.name, "ecotune.model": model, "ecotune.task": task.key,
            "ecotune.optimizer": cfg.optimizer}
    return {"spec": spec, "tags": tags, "study_config": cfg.dump()}


def study_warm_start(cfg: StudyConfig, space: SearchSpace, fixed: dict[str, Any],
                     header: dict[str, Any]) -> dict[str, Any] | None:
    """The warm start the study records (:meth:`WarmStart.to_dict
    <ecotune.warmstart.WarmStart.to_dict>`), or None.

    A journal that has its header already records what its study took (or that it took
    nothing), and that wins: a resumed study, and every later step of a pipeline run,
    replays it. Otherwise it is read from ``cfg.warm_start``'s source (``previous``: the
    journal of the study's previous pipeline run, :func:`ecotune.continuation.previous_journal`;
    none, e.g. in ``ecotune tune`` or a study's first run: a cold start).

    Raises:
        WarmStartError: the source cannot be read or holds no study.
    """
    from ecotune.continuation import previous_journal
    from ecotune.journal import journal_header
    from ecotune.warmstart import PREVIOUS, read_warm_start, study_identity

    if cfg.optimizer != "ecotune":
        return None
    head = journal_header(cfg.journal_uri)
    if head is not None:
        return head.get("warm_start") or None
    ws = cfg.warm_start
    if ws is None:
        return None
    source = previous_journal(cfg.journal_uri) if ws.journal == PREVIOUS else ws.journal
    if source is None:
        log.info("study %s: no previous run to warm-start from; it starts cold", cfg.name)
        return None
    identity = study_identity({"space": space.to_dict(), "options": {"fixed": fixed}, **header})
    out = read_warm_start(source, space=space, identity=identity, top_k=ws.top_k,
                          observations=ws.observations, r_max=cfg.r_max)
    log.info("study %s: warm start from %s: %d configs, %s", cfg.name, source,
             len(out.configs), out.reason)
    return out.to_dict()


def build_optimizer(cfg: StudyConfig, task: Task, *, engine: Any = None,
                    order: Sequence[str] | None = None, model: str | None = None,
                    prompt_tokens_hint: float | None = None) -> Optimizer:
    """The study's optimizer, new or resumed from the journal at ``cfg.journal_uri``.

    Args:
        cfg: the study config.
        task: its task (``make_task(cfg.task)``).
        engine: counts prompt tokens (``count_prompt_tokens``); None when the caller cannot
            reach one (the prior is then the default, worst cases the cost model's).
        order: the nested instance order (default: computed from the task and seed).
        model: the served model, for tracking tags (default: the config's engine's).
        prompt_tokens_hint: a cost prior to use instead of counting one.

    Raises:
        JournalError: the journal holds another study.
        WarmStartError: the warm start's source cannot be read.
        ValueError: the config does not fit the optimizer (candidates outside the space...).
        SearchSpaceError: the search space is invalid.
    """
    from ecotune.prompt_tokens import PromptTokens
    from ecotune.subsets import nested_order

    space, fixed = study_space(cfg, task)
    options = optimizer_options(cfg, fixed)
    model = model or str(getattr(cfg.engine, "model", None) or "local")
    header = tracking_header(cfg, task, space, fixed, model)
    warm = study_warm_start(cfg, space, fixed, header)
    initial = [space.canonical(c) for c in (warm or {}).get("configs", [])]
    if cfg.optimizer == "ecotune" and cfg.start_from_default:
        initial += [c for c in map(space.canonical, helm_first(space, task.default_max_tokens))
                    if c not in initial]
    if initial:
        options["initial_configs"] = initial
    if warm is not None:
        options["warm_start"] = warm
    if engine is not None:
        ids = list(order if order is not None else nested_order(task.instances(), cfg.seed))
        counts = PromptTokens(task, engine, ids[:cfg.r_max])
        options["prompt_tokens"] = counts
        if prompt_tokens_hint is None:
            prompt_tokens_hint = float(counts(cost_prior_config(task, space, fixed)).mean())
    if prompt_tokens_hint is not None:
        options["prompt_tokens_hint"] = prompt_tokens_hint
    return make_optimizer(cfg.optimizer, space=space, budget_tokens=cfg.budget_tokens,
                          r_min=cfg.r_min, r_max=cfg.r_max, seed=cfg.seed,
                          journal=cfg.journal_uri, study_name=cfg.name,
                          header_extra=header, **options)
