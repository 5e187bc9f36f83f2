"""Study-config plumbing shared by the components: the chart's study config -> library objects.

Every component receives the chart's study config (``/etc/ecotune/study.yaml`` as a dict;
secrets only as references; validated by :class:`~components.chart_config.ChartConfig`) and
the study journal's URI, and rebuilds what it needs from them through the library's one
construction path (:func:`ecotune.construct.build_optimizer`), so a pipeline asks the trials
``ecotune tune`` asks for the same config and seed. Nothing here holds state: the journal is
the only state a pipeline run has.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from components.chart_config import ChartConfig
from ecotune.optimizers.base import Optimizer

log = logging.getLogger(__name__)


def chart(cfg: ChartConfig | dict[str, Any]) -> ChartConfig:
    """The validated study config (:class:`ChartConfigError` naming the wrong field)."""
    return ChartConfig.of(cfg)


def make_study_optimizer(cfg: ChartConfig | dict[str, Any], journal_uri: str,
                         engine: Any = None) -> Optimizer:
    """Open (or resume) the study's optimizer on ``journal_uri``.

    The first call writes the journal header; every later one replays the journal, so
    asked-but-untold trials are handed out again first by ``ask()``. ``engine`` counts
    prompt tokens (steps that write the header or ask trials pass :func:`counting_engine`'s);
    the steps that only replay need none: the cost prior comes from the journal header.
    """
    from ecotune.construct import build_optimizer
    from ecotune.tasks import make_task

    c = chart(cfg)
    study = c.study_config(journal_uri)
    return build_optimizer(study, make_task(study.task), engine=engine, model=c.model_name,
                           prompt_tokens_hint=c.study.prompt_tokens_hint)


@contextlib.contextmanager
def counting_engine(cfg: ChartConfig | dict[str, Any], engine_url: str = ""
                    ) -> Iterator[Any]:
    """The engine this step may ask for exact prompt token counts, or None.

    The step's own ``engine_url`` when it has one (the pipeline hands its ``engine_url``
    and the API-key Secret to every step that calls the engine: ``pipelines.kube``); else
    the service the study config names (``engine.base_url``) when it needs no API key: a
    caller without the URL may lack the key too. With vLLM started inside the GPU evaluator
    pods there is none, and the study's trials are priced with the cost model's default
    prior (the same in every step: the header records it).
    """
    from ecotune.engines import make_engine

    c = chart(cfg)
    url = engine_url or (c.engine.base_url if c.engine.api_key_secret is None else "")
    if not url:
        if c.engine.base_url:
            log.warning("study %s: prompt tokens not counted: the engine needs an API key "
                        "this step does not have", c.study.name)
        yield None
        return
    with make_engine(c.engine_spec(url)) as engine:
        yield engine


def engine_spec(cfg: ChartConfig | dict[str, Any], engine_url: str) -> dict[str, Any]:
    """EngineConfig dict for ``engine_url`` (``fake://`` gives a FakeEngine); see
    :meth:`ChartConfig.engine_spec`."""
    return chart(cfg).engine_spec(engine_url)


def subsets_store(manifest_uri: str) -> str:
    """The store URI a manifest lives in (``<store>/subsets/<task>/<seed>/manifest.json``)."""
    return manifest_uri.rsplit("/subsets/", 1)[0]


def run_journal_uri(base: str, run_key: str) -> str:
    """This run's journal: its own under the study's journal prefix, or the previous run's
    when that study stopped only for want of rounds (see :func:`ecotune.continuation.run_journal`)."""
    from ecotune.continuation import run_journal

    return run_journal(base, run_key)


def rounds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The journal's ``round`` records, in round order."""
    return sorted((r for r in records if r.get("type") == "round"), key=lambda r: r["round"])


@contextlib.contextmanager
def serve_vllm(cfg: ChartConfig | dict[str, Any], port: int = 8000, timeout_s: float = 1800.0
               ) -> Iterator[str]:
    """Start ``vllm serve`` in this pod (GPU evaluator image) and yield its base URL.

    The model comes from the model-cache volume (``HF_HOME`` in the evaluator image);
    ``engine.gpu_evaluator.vllm_args`` are passed through. vLLM writes to the pod's log; it
    is stopped (its whole process group) when the block ends.
    """
    from ecotune.process import ManagedProcess

    c = chart(cfg)
    gpu = c.engine.gpu_evaluator
    cmd = ["vllm", "serve", c.study.model, "--served-model-name", c.model_name,
           "--host", "127.0.0.1", "--port", str(port),
           "--tensor-parallel-size", str(gpu.gpu_count if gpu else 1),
           *[str(a) for a in (gpu.vllm_args if gpu else [])]]
    url = f"http://127.0.0.1:{port}"
    with ManagedProcess(cmd, log_path=None, ready=f"{url}/health", name="vllm",
                        startup_timeout_s=timeout_s, poll_s=2.0, stop_grace_s=30.0):
        yield url


def promote_best(opt: Optimizer, cfg: ChartConfig | dict[str, Any], engine_url: str
                 ) -> dict[str, Any] | None:
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

    c = chart(cfg)
    track, s = c.tracking, c.study
    if not track.registered_model:
        raise ValueError(f"study {s.name}: tracking.registered_model is not set")
    state = opt.state
    best = best_trial(((i, r) for i, r in state.results.items()
                       if r.n_evaluated >= opt.r_max and r.instance_scores), opt.r_max)
    if best is None:
        return None
    tid = best[0]
    config = dict(state.trials[tid].config)
    alias = track.promote_alias or "champion"
    common = {"tracking_uri": track.tracking_uri,
              "experiment": f"{track.experiment or 'ecotune'}-promotions",
              "tags": {"ecotune.study": s.name, "ecotune.trial": str(tid)}}
    if engine_url:
        task = make_task(s.task)
        order = nested_order(task.instances(), s.seed)
        held = order[opt.r_max: opt.r_max + (track.held_out or 50)]
        if held:
            spec = c.engine_spec(engine_url)
            with make_engine(spec) as engine:
                return held_out_promotion(track.registered_model, config, task, engine,
                                          {"base_url": engine_url, "model": spec["model"]},
                                          held, alias=alias, **common)
    serving = engine_url or c.engine.serving_url
    if not serving:
        raise ValueError(f"study {s.name}: vLLM ran inside the pipeline and "
                         "engine.serving_url is not set: no endpoint to register")
    res = promote(track.registered_model, config,
                  {"base_url": serving, "model": c.model_name},
                  challenger_scores=state.results[tid].instance_scores, champion_alias=alias,
                  **common)
    return {"model": res.model_name, "version": res.version, "aliases": list(res.aliases),
            "promoted": res.promoted, "reason": res.reason}
