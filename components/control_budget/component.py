"""Budget controller: record the round's accounting and decide whether to go on."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def control_budget(study: dict, journal_uri: str, round_index: int, max_rounds: int) -> str:
    """Append ``round:<i>`` (B_used, B_remain, η, T̂, decision) and return the decision.

    ``"continue"`` when the budget affords another trial, the optimizer has not stopped
    and a compiled round is left; ``"stop"`` otherwise (reason in the record). Re-running
    a round's controller returns the decision already recorded. The step only replays the
    journal: it needs no engine (the cost prior comes from the journal header). With
    tracking on, it writes the MLflow trial runs an evaluator failed to write.

    Args:
        study: the chart's study config (``components.chart_config.ChartConfig``).
        journal_uri: this run's journal (the sampler's ``journal_uri`` output).
        round_index: the round this controller closes (0-based).
        max_rounds: rounds compiled into the pipeline.

    Returns:
        ``"continue"`` or ``"stop"``: the condition of the next round.
    """
    from components._common import make_study_optimizer
    from components._steps import log_trials, record_round

    opt = make_study_optimizer(study, journal_uri)
    decision = record_round(opt, round_index, max_rounds)
    log_trials(study, opt.state.journal.records())  # what an evaluator failed to log
    return decision
