"""Budget controller: record the round's accounting and decide whether to go on."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def control_budget(study: dict, journal_uri: str, round_index: int, max_rounds: int) -> str:
    """Append ``round:<i>`` (B_used, B_remain, η, T̂, decision) and return the decision.

    ``"continue"`` when the budget affords another trial, the optimizer has not stopped
    and a compiled round is left; ``"stop"`` otherwise (reason in the record). Re-running
    a round's controller returns the decision already recorded.
    """
    from components._common import make_study_optimizer

    state = make_study_optimizer(study, journal_uri).state
    records = state.journal.records()
    done = next((r for r in records if r.get("key") == f"round:{round_index}"), None)
    if done is not None:
        return done["decision"]
    stop = next((r for r in records if r.get("type") == "stop"), None)
    reason = state.check_stop()
    if reason is None and stop is not None:
        reason = stop["reason"]
    if reason is None and round_index + 1 >= max_rounds:
        reason = "max_rounds"
    decision = "continue" if reason is None else "stop"
    b = state.budget
    state.journal.append({
        "type": "round", "key": f"round:{round_index}", "round": round_index,
        "B_used": b.used, "B_remain": b.remain, "eta": b.eta,
        "T_hat": b.t_hat(state.mean_trial_cost()), "trials_told": len(state.results),
        "pending": sorted(state.pending), "decision": decision, "stop_reason": reason})
    return decision
