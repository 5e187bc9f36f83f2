"""The EcoTune loop as a KFP v2 pipeline: rounds of ask (batch) -> evaluate (parallel) -> decide.

KFP v2 has no recursion, so ``max_rounds`` rounds are unrolled at compile time, each nested
in the previous round's ``dsl.If(controller.output == "continue")``::

    ExitHandler(finalize)
      sample_dataset
      round 0: update_surrogate -> ParallelFor(trial items, parallelism=P): evaluate -> control_budget
        If continue: round 1: ... -> If continue: round 2: ...

All state lives in the study journal, so every step can be retried. Kubernetes settings
(GPU, tolerations, model cache, Secrets, pod metadata, resources, timeouts) are applied by
:mod:`pipelines.kube` only, with kfp-kubernetes; they come from :class:`PipelineOptions`,
which :meth:`PipelineOptions.from_study` fills from a chart study config
(``pipelines.submit`` compiles one pipeline per study that way).
"""

from typing import Any

from kfp import dsl

from components import control_budget, finalize_study, sample_dataset, update_surrogate
from components.evaluator import evaluate_trial
from pipelines.kube import control_plane_step, evaluator_step, tracking_env
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

    evaluate = op(evaluate_trial, o.evaluator_image if o.gpu_evaluator else o.control_plane_image)
    ask_op, budget_op = op(update_surrogate, o.control_plane_image), op(control_budget, o.control_plane_image)
    sample_op, final_op = op(sample_dataset, o.control_plane_image), op(finalize_study, o.control_plane_image)

    def one_round(i: int, study: Any, journal: Any, manifest: Any, engine_url: Any,
                  batch_size: Any) -> None:
        ask = ask_op(study=study, journal_uri=journal, manifest_uri=manifest, q=batch_size)
        ask.set_display_name(f"round-{i}-ask")
        control_plane_step(ask, o, "ask")
        # the loop body takes only its item ({trial_id, journal_uri, manifest_uri}) and
        # pipeline parameters: no other task's outputs cross into the ParallelFor
        with dsl.ParallelFor(ask.output, parallelism=o.parallelism, name=f"round-{i}-trials"
                             ) as item:
            ev = evaluate(study=study, trial=item, engine_url=engine_url)
            ev.set_display_name(f"round-{i}-evaluate")
            evaluator_step(ev, o)
        ctl = budget_op(study=study, journal_uri=journal, round_index=i,
                             max_rounds=o.max_rounds).after(ev)
        ctl.set_display_name(f"round-{i}-budget")
        control_plane_step(ctl, o, "budget")
        if i + 1 < o.max_rounds:
            with dsl.If(ctl.output == "continue", name=f"round-{i + 1}"):
                one_round(i + 1, study, journal, manifest, engine_url, batch_size)

    @dsl.pipeline(name=PIPELINE_NAME, description=(
        "EcoTune: token-budgeted multi-fidelity tuning of LLM inference settings "
        f"({o.max_rounds} rounds, {o.parallelism} parallel evaluators, "
        f"{'GPU evaluator' if o.gpu_evaluator else 'existing vLLM service'})."))
    def ecotune_loop(study: dict, journal_uri: str, subsets_uri: str, engine_url: str = "",
                     batch_size: int = 4) -> None:
        """Args: study config (chart contract), journal prefix, subsets store, engine URL
        (empty: start vLLM in the GPU evaluator), trials asked per round."""
        final = final_op(study=study, journal_uri=journal_uri, engine_url=engine_url,
                               run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        final.set_display_name("finalize")
        control_plane_step(final, o, "finalize")
        tracking_env(final, o)
        with dsl.ExitHandler(final, name="ecotune-study"):
            prep = sample_op(study=study, subsets_uri=subsets_uri, journal_uri=journal_uri,
                                  run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
            prep.set_display_name("sample-dataset")
            control_plane_step(prep, o, "sample")
            one_round(0, study, prep.outputs["journal_uri"], prep.outputs["manifest_uri"],
                      engine_url, batch_size)

    return ecotune_loop


#: the default pipeline (existing vLLM service, 3 rounds), as ``make pipeline`` compiles it.
ecotune_loop = build_pipeline()
