"""Study-config plumbing shared by the components: config dict -> library objects.

Every component receives the chart's study config (``/etc/ecotune/study.yaml`` as a dict;
secrets only as references) and the study journal's URI, and rebuilds what it needs from
them. Nothing here holds state: the journal is the only state a pipeline run has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ecotune.optimizers.base import Optimizer

#: ``study`` keys that are optimizer options (config name -> make_optimizer keyword).
_OPTIONS = {"tau": "tau", "eta0": "eta0", "lambda": "lam", "max_trials": "max_trials",
            "fixed": "fixed", "patience": "patience", "prompt_tokens_hint": "prompt_tokens_hint",
            "candidates": "candidates", "acquisition": "acquisition",
            "early_stopping": "early_stopping", "max_failed_trials": "max_failed_trials"}


def study_section(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``study:`` block of a study config (a bare block is accepted too)."""
    return dict(cfg.get("study", cfg))


def task_spec(cfg: dict[str, Any]) -> dict[str, Any] | str:
    return study_section(cfg)["task"]


def make_study_optimizer(cfg: dict[str, Any], journal_uri: str) -> Optimizer:
    """Open (or resume) the study's optimizer on ``journal_uri``.

    The first call writes the journal header; every later one replays the journal, so
    asked-but-untold trials are handed out again first by ``ask()``.
    """
    from ecotune.optimizers import make_optimizer
    from ecotune.space import SearchSpace
    from ecotune.study import default_space
    from ecotune.tasks import make_task

    s = study_section(cfg)
    options = {kw: s[k] for k, kw in _OPTIONS.items() if s.get(k) is not None}
    if s.get("search_space"):
        # parameters in name order: a pipeline hands the config over as a protobuf Struct
        # (keys sorted), and sampling follows the space's order, so the same study config
        # gives the same trials in a pipeline run and in-process
        space = SearchSpace.from_dict(dict(sorted(s["search_space"].items())))
    else:  # as `ecotune tune` does: the default space sized for the task
        space = default_space(make_task(task_spec(cfg)))
    if "max_tokens" not in space.params and "max_tokens" not in options.get("fixed", {}):
        task = make_task(task_spec(cfg))
        options["fixed"] = {**options.get("fixed", {}), "max_tokens": task.default_max_tokens}
    if s.get("optimizer", "ecotune") != "ecotune":
        for k in ("tau", "acquisition", "early_stopping"):
            options.pop(k, None)
    spec = {k: s.get(k) for k in ("name", "model", "task", "optimizer", "budget_tokens",
                                  "r_min", "r_max", "seed")}
    return make_optimizer(
        s.get("optimizer", "ecotune"), space=space, budget_tokens=int(s["budget_tokens"]),
        r_min=int(s["r_min"]), r_max=int(s["r_max"]), seed=int(s.get("seed", 0)),
        journal=journal_uri, study_name=s.get("name"),
        header_extra={"spec": spec, "tags": {"ecotune.study": str(s.get("name")),
                                             "ecotune.model": str(s.get("model"))}},
        **options)


def engine_spec(cfg: dict[str, Any], engine_url: str) -> dict[str, Any]:
    """EngineConfig dict for ``engine_url`` (``fake://`` gives a FakeEngine).

    The API key, when the study has one, arrives as ``ECOTUNE_API_KEY`` from a Secret.
    """
    eng = cfg.get("engine") or {}
    model = eng.get("served_model_name") or study_section(cfg).get("model")
    spec: dict[str, Any] = {"base_url": engine_url, "model": model}
    for k in ("max_concurrency", "timeout_s", "max_retries", "send_seed", "use_chat",
              "tokenizer"):
        if eng.get(k) is not None:
            spec[k] = eng[k]
    return spec


def subsets_store(manifest_uri: str) -> str:
    """The store URI a manifest lives in (``<store>/subsets/<task>/<seed>/manifest.json``)."""
    return manifest_uri.rsplit("/subsets/", 1)[0]


def run_journal_uri(base: str, run_key: str) -> str:
    """One journal per pipeline run, under the study's journal prefix."""
    base = base.rstrip("/")
    return f"{base}/{run_key}" if run_key else base


def rounds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The journal's ``round`` records, in round order."""
    return sorted((r for r in records if r.get("type") == "round"), key=lambda r: r["round"])


@contextlib.contextmanager
def serve_vllm(cfg: dict[str, Any], port: int = 8000, timeout_s: float = 1800.0
               ) -> Iterator[str]:
    """Start ``vllm serve`` in this pod (GPU evaluator image) and yield its base URL.

    The model comes from the model-cache volume (``HF_HOME`` in the evaluator image);
    ``engine.gpu_evaluator.vllm_args`` are passed through. vLLM writes to the pod's log; it
    is stopped (its whole process group) when the block ends.
    """
    from ecotune.process import ManagedProcess

    eng = cfg.get("engine") or {}
    gpu = eng.get("gpu_evaluator") or {}
    model = study_section(cfg)["model"]
    name = eng.get("served_model_name") or model
    cmd = ["vllm", "serve", model, "--served-model-name", name, "--host", "127.0.0.1",
           "--port", str(port), "--tensor-parallel-size", str(gpu.get("gpu_count", 1)),
           *[str(a) for a in gpu.get("vllm_args") or []]]
    url = f"http://127.0.0.1:{port}"
    with ManagedProcess(cmd, log_path=None, ready=f"{url}/health", name="vllm",
                        startup_timeout_s=timeout_s, poll_s=2.0, stop_grace_s=30.0):
        yield url


def promote_best(opt: Optimizer, cfg: dict[str, Any], engine_url: str) -> dict[str, Any] | None:
    """Promote the best r_max config in the MLflow registry, every run.

    With an engine to ask (``engine_url``), the winner and the current holder of the
    study's alias (``tracking.promote_alias``, default ``champion``) are scored on the same
    held-out instances (after r_max in the nested order, never tuned on; up to
    ``tracking.held_out``, default 50) and the paired test decides. Without one (the GPU
    evaluator starts vLLM inside its own pods), the winner's tuning scores are used and an
    existing champion stays: it cannot be compared fairly.

    The registered model calls the engine the pipeline used (``engine_url``) or, when vLLM
    ran inside the pipeline's pods, the study's production endpoint
    (``engine.serving_url``); with neither there is nothing a consumer could call, and the
    winner is not registered (ValueError).
    """
    from ecotune.best import best_trial
    from ecotune.engines import make_engine
    from ecotune.subsets import nested_order
    from ecotune.tasks import make_task
    from ecotune.tracking import promote
    from ecotune.tracking.promotion import held_out_promotion

    track, s = cfg.get("tracking") or {}, study_section(cfg)
    state = opt.state
    best = best_trial(((i, r) for i, r in state.results.items()
                       if r.n_evaluated >= opt.r_max and r.instance_scores), opt.r_max)
    if best is None:
        return None
    tid = best[0]
    config = dict(state.trials[tid].config)
    alias = track.get("promote_alias") or "champion"
    common = {"tracking_uri": track.get("tracking_uri"),
              "experiment": f"{track.get('experiment') or 'ecotune'}-promotions",
              "tags": {"ecotune.study": str(s.get("name")), "ecotune.trial": str(tid)}}
    if engine_url:
        task = make_task(task_spec(cfg))
        order = nested_order(task.instances(), int(s.get("seed", 0)))
        held = order[opt.r_max: opt.r_max + int(track.get("held_out") or 50)]
        if held:
            spec = engine_spec(cfg, engine_url)
            with make_engine(spec) as engine:
                return held_out_promotion(track["registered_model"], config, task, engine,
                                          {"base_url": engine_url, "model": spec["model"]},
                                          held, alias=alias, **common)
    serving = engine_url or (cfg.get("engine") or {}).get("serving_url")
    if not serving:
        raise ValueError(f"study {s.get('name')}: vLLM ran inside the pipeline and "
                         "engine.serving_url is not set: no endpoint to register")
    res = promote(track["registered_model"], config,
                  {"base_url": serving, "model": engine_spec(cfg, serving)["model"]},
                  challenger_scores=state.results[tid].instance_scores, champion_alias=alias,
                  **common)
    return {"model": res.model_name, "version": res.version, "aliases": list(res.aliases),
            "promoted": res.promoted, "reason": res.reason}
