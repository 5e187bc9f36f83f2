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


def run_engine_spec(cfg: ChartConfig | dict[str, Any], run_key: str,
                    namespace: str | None = None) -> Any:
    """The run's vLLM engine (:class:`ecotune.run_engine.RunEngineSpec`) for a study with
    ``engine.gpu_evaluator.engine: perRun``: its GPU settings, the evaluator image (which
    ships ``vllm``), the API key and HF token Secrets, and the pipeline pods' pull secrets,
    labels, annotations and GPU-evaluator resources; in this pod's namespace (else
    ``namespace``, else the study's ``kfp.namespace``). The same in every step of a run."""
    from components.images import EVALUATOR_IMAGE
    from ecotune.run_engine import RunEngineSpec, engine_name, pod_namespace

    c = chart(cfg)
    gpu = c.engine.gpu_evaluator.model_dump() if c.engine.gpu_evaluator else {}
    k = c.kfp.model_dump()
    hf = gpu.get("hf_token_secret") or {}
    api = c.engine.api_key_secret
    spec: dict[str, Any] = dict(
        name=engine_name(c.study.name, run_key), run_key=run_key,
        namespace=namespace or pod_namespace(c.kfp.namespace),
        image=gpu.get("image") or EVALUATOR_IMAGE, model=c.study.model,
        served_model_name=c.model_name, gpu_count=int(gpu.get("gpu_count") or 1),
        port=int(gpu.get("port") or 8000),
        gpu_resource=gpu.get("gpu_resource") or "nvidia.com/gpu",
        node_selector=dict(gpu.get("node_selector") or {}),
        tolerations=list(gpu.get("tolerations") or []),
        model_cache_pvc=gpu.get("model_cache_pvc") or None,
        model_cache_mount=gpu.get("model_cache_mount") or "/models",
        vllm_args=[str(a) for a in gpu.get("vllm_args") or []],
        hf_token_secret=hf.get("name"), hf_token_key=hf.get("key") or "HF_TOKEN",
        api_key_secret=api.name if api else None, api_key_key=(api.key if api else None) or "key",
        resources={kind: {n: str(v) for n, v in (q or {}).items()} for kind, q in
                   ((k.get("resources") or {}).get("gpu_evaluator") or {}).items()},
        image_pull_secrets=[str(s) for s in k.get("image_pull_secrets") or []],
        labels={str(a): str(b) for a, b in (k.get("pod_labels") or {}).items()},
        annotations={str(a): str(b) for a, b in (k.get("pod_annotations") or {}).items()})
    if "shm_size" in gpu:
        spec["shm_size"] = gpu["shm_size"] or None
    if gpu.get("accelerator_label") and gpu.get("accelerator_type"):
        spec["node_selector"] = {gpu["accelerator_label"]: gpu["accelerator_type"],
                                 **spec["node_selector"]}
    return RunEngineSpec(**spec)


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


def promote_best(opt: Optimizer, cfg: ChartConfig | dict[str, Any], engine_url: str,
                 serving_url: str | None = None) -> dict[str, Any] | None:
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
    winner is not registered (ValueError). ``serving_url`` overrides the endpoint registered
    when the scoring engine does not outlive the run (the run engine of ``start_engine``).
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
    serving = (engine_url if serving_url is None else serving_url) or c.engine.serving_url
    if not serving:
        raise ValueError(f"study {s.name}: vLLM ran inside the pipeline and "
                         "engine.serving_url is not set: no endpoint to register")
    if engine_url:
        task = make_task(s.task)
        order = nested_order(task.instances(), s.seed)
        held = order[opt.r_max: opt.r_max + (track.held_out or 50)]
        if held:
            spec = c.engine_spec(engine_url)
            with make_engine(spec) as engine:
                return held_out_promotion(track.registered_model, config, task, engine,
                                          {"base_url": serving, "model": spec["model"]},
                                          held, alias=alias, **common)
    res = promote(track.registered_model, config,
                  {"base_url": serving, "model": c.model_name},
                  challenger_scores=state.results[tid].instance_scores, champion_alias=alias,
                  **common)
    return {"model": res.model_name, "version": res.version, "aliases": list(res.aliases),
            "promoted": res.promoted, "reason": res.reason}
