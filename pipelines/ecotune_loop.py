"""The EcoTune loop as a KFP v2 pipeline: rounds of ask (batch) -> evaluate (parallel) -> decide.

KFP v2 has no recursion, so ``max_rounds`` rounds are unrolled at compile time, each nested
in the previous round's ``dsl.If(controller.output == "continue")``::

    ExitHandler(finalize [deletes the run engine])
      [start_engine: one vLLM Deployment + Service for the run (run_engine)]
      sample_dataset
      round 0: update_surrogate -> ParallelFor(trial items, parallelism=P): evaluate -> control_budget
        If continue: round 1: ... -> If continue: round 2: ...

All state lives in the study journal, so every step can be retried. Kubernetes settings
(GPU, tolerations, model cache, Secrets, pod metadata, resources, timeouts) are applied by
:mod:`pipelines.kube` only, with kfp-kubernetes; they come from :class:`PipelineOptions`,
which :meth:`PipelineOptions.from_study` fills from a chart study config
(``pipelines.submit`` compiles one pipeline per study that way).

Every step that calls the engine gets ``engine_url`` and the engine's API-key Secret
(:func:`pipelines.kube.engine_access`): the evaluators, the finalize step (held-out
promotion) and the sample and ask steps, which count exact prompt tokens on it
(``components._common.counting_engine``), so the journal header's cost prior and the
trials' token limits are those ``ecotune tune`` gets for the same study. When vLLM runs
inside the GPU evaluator pods (``engine_url`` empty) there is no endpoint while sampling
and asking: the study starts from the cost model's default prior (or the study's
``prompt_tokens_hint``) and trials' worst cases use the cost model's cautious ceiling, so
token limits, and with them the trials, can differ from ``ecotune tune`` against a served
copy of the model; the budget stays hard, since every request is authorized at its exact
prompt tokens in the evaluator pod (docs/operations.md). With ``run_engine`` (the chart's
default for GPU studies) the run's own engine is up before sampling, so every step counts
exact prompt tokens on it and one model load serves all the run's trials.
"""

from typing import Any

from kfp import dsl

from components.control_budget import control_budget
from components.evaluate_trial import evaluate_trial
from components.finalize_study import finalize_study
from components.sample_dataset import sample_dataset
from components.start_engine import start_engine
from components.update_surrogate import update_surrogate
from pipelines.kube import control_plane_step, engine_access, evaluator_step, tracking_env
from pipelines.options import STEPS, PipelineOptions, Resources

__all__ = ["PIPELINE_NAME", "STEPS", "PipelineOptions", "Resources", "build_pipeline",
           "ecotune_loop"]

PIPELINE_NAME = "ecotune-loop"


def build_pipeline(options: PipelineOptions | None = None) -> Any:
    """The pipeline function for ``options`` (compile it with ``kfp.compiler.Compiler``)."""
    o = options or PipelineOptions()

    def op(func: Any, image: str) -> Any:  # the components, in this study's pinned images
        return dsl.component(getattr(func, "python_func", func), base_image=image,
                             install_kfp_package=False)

    cpu = o.control_plane_image
    evaluate = op(evaluate_trial, o.evaluator_image if o.gpu_evaluator else cpu)
    ask_op, budget_op = op(update_surrogate, cpu), op(control_budget, cpu)
    sample_op, final_op = op(sample_dataset, cpu), op(finalize_study, cpu)
    engine_op = op(start_engine, cpu)

    def one_round(i: int, study: Any, journal: Any, manifest: Any, engine_url: Any,
                  batch_size: Any, pipeline_engine_url: Any) -> None:
        ask = ask_op(study=study, journal_uri=journal, manifest_uri=manifest, q=batch_size,
                     engine_url=engine_url)
        ask.set_display_name(f"round-{i}-ask")
        control_plane_step(ask, o, "ask")
        engine_access(ask, o)  # counts exact prompt tokens for the trials' token limits
        # the loop body takes only its item ({trial_id, journal_uri, manifest_uri}) and
        # pipeline parameters: no other task's outputs cross into the ParallelFor
        with dsl.ParallelFor(ask.output, parallelism=o.parallelism, name=f"round-{i}-trials"
                             ) as item:  # the item carries the engine URL (run engine's too)
            ev = evaluate(study=study, trial=item, engine_url=pipeline_engine_url)
            ev.set_display_name(f"round-{i}-evaluate")
            evaluator_step(ev, o)
            tracking_env(ev, o)  # logs its trial to MLflow as it finishes
        ctl = budget_op(study=study, journal_uri=journal, round_index=i,
                        max_rounds=o.max_rounds).after(ev)
        ctl.set_display_name(f"round-{i}-budget")
        control_plane_step(ctl, o, "budget")
        tracking_env(ctl, o)  # catches up trial runs an evaluator could not write
        if i + 1 < o.max_rounds:
            with dsl.If(ctl.output == "continue", name=f"round-{i + 1}"):
                one_round(i + 1, study, journal, manifest, engine_url, batch_size,
                          pipeline_engine_url)

    @dsl.pipeline(name=PIPELINE_NAME, description=(
        "EcoTune: token-budgeted multi-fidelity tuning of LLM inference settings "
        f"({o.max_rounds} rounds, {o.parallelism} parallel evaluators, "
        f"{'GPU evaluator' if o.gpu_evaluator else 'existing vLLM service'})."))
    def ecotune_loop(study: dict, journal_uri: str, subsets_uri: str, engine_url: str = "",
                     batch_size: int = 4) -> None:
        """Args: study config (chart contract), journal prefix, subsets store, engine URL
        (empty: start vLLM in the GPU evaluator), trials asked per round."""
        final = final_op(study=study, journal_uri=journal_uri, engine_url=engine_url,
                         run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER, stop_engine=o.run_engine)
        final.set_display_name("finalize")
        control_plane_step(final, o, "finalize")
        engine_access(final, o)  # held-out promotion calls the engine
        tracking_env(final, o)
        with dsl.ExitHandler(final, name="ecotune-study"):
            url = engine_url
            if o.run_engine:  # one vLLM for the run; finalize deletes it
                eng = engine_op(study=study, run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
                eng.set_display_name("start-engine")
                control_plane_step(eng, o, "engine")
                url = eng.output
            prep = sample_op(study=study, subsets_uri=subsets_uri, journal_uri=journal_uri,
                             run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER, engine_url=url)
            prep.set_display_name("sample-dataset")
            control_plane_step(prep, o, "sample")
            tracking_env(prep, o)  # creates the study's MLflow run before any trial
            engine_access(prep, o)  # counts the cost prior the journal header records
            one_round(0, study, prep.outputs["journal_uri"], prep.outputs["manifest_uri"],
                      url, batch_size, engine_url)

    return ecotune_loop


#: the default pipeline (existing vLLM service, 3 rounds), as ``make pipeline`` compiles it.
ecotune_loop = build_pipeline()
