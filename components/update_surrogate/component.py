"""Surrogate updater: rebuild the optimizer from the journal and ask a batch of trials."""

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def update_surrogate(study: dict, journal_uri: str, manifest_uri: str, q: int,
                     engine_url: str = "") -> list:
    """Ask up to ``q`` trials; one work item per trial feeds the round's ``dsl.ParallelFor``.

    Each item is ``{"trial_id", "journal_uri", "manifest_uri", "engine_url"}``: everything
    an evaluator needs besides the pipeline parameters, so the loop body consumes only its
    loop item (and pipeline parameters), never another task's output; ``engine_url`` carries
    the run engine's URL when ``start_engine`` made one.

    The batch is diverse by construction: each ``ask`` sees the trials asked before it as
    pending (reserved budget, penalised by the acquisition). Asked-but-untold trials of an
    earlier, interrupted round come first with their original ids. When the optimizer is
    done the list is empty and a ``stop`` record with its reason goes to the journal.
    Trials' worst cases use exact prompt tokens counted on ``engine_url``, so their token
    limits are those ``ecotune tune`` sets (see ``components._common.counting_engine``).
    """
    from components._common import counting_engine, make_study_optimizer

    items: list[dict] = []
    with counting_engine(study, engine_url) as engine:
        opt = make_study_optimizer(study, journal_uri, engine=engine)
        while len(items) < int(q):
            trial = opt.ask()
            if trial is None:
                if not items and opt.state.journal is not None:
                    opt.state.journal.append({"type": "stop", "key": "stop",
                                              "reason": opt.stop_reason or "done"})
                break
            items.append({"trial_id": trial.id, "journal_uri": journal_uri,
                          "manifest_uri": manifest_uri, "engine_url": engine_url})
    return items
