"""Dataset sampler: build (or reuse) the study's nested fidelity subsets on the store."""

from typing import NamedTuple

from kfp import dsl

from components.images import CONTROL_PLANE_IMAGE


@dsl.component(base_image=CONTROL_PLANE_IMAGE, install_kfp_package=False)
def sample_dataset(study: dict, subsets_uri: str, journal_uri: str, run_key: str = "",
                   engine_url: str = ""
                   ) -> NamedTuple("Outputs", [("manifest_uri", str), ("journal_uri", str)]):
    """Write ``subsets/<task>/<seed>/`` under ``subsets_uri`` once and open the journal.

    Idempotent: an identical ordering already stored is reused; a different one is an
    error (see :func:`ecotune.subsets.build_subsets`). Opening the optimizer writes the
    journal header, so every later step resumes the same study, with the cost prior
    counted here on ``engine_url`` (exact prompt tokens, as ``ecotune tune`` counts them;
    see ``components._common.counting_engine``). Without an endpoint (vLLM started in the
    GPU evaluator pods) the header records the default prior. With tracking on, the
    study's MLflow parent run is made here, so the evaluators log their trials under it.

    Returns:
        manifest_uri: ``<subsets_uri>/subsets/<task>/<seed>/manifest.json``.
        journal_uri: this run's journal (``<journal_uri>/<run_key>``).
    """
    from collections import namedtuple

    from components._common import (
        chart,
        counting_engine,
        make_study_optimizer,
        run_journal_uri,
    )
    from components._steps import log_trials
    from ecotune.subsets import build_subsets
    from ecotune.tasks import make_task

    cfg = chart(study)
    s = cfg.study
    manifest = build_subsets(make_task(s.task), s.r_max, s.seed, subsets_uri)
    journal = run_journal_uri(journal_uri, run_key)
    with counting_engine(cfg, engine_url) as engine:  # the header records its cost prior
        opt = make_study_optimizer(cfg, journal, engine=engine)
    log_trials(cfg, opt.state.journal.records())  # the study's MLflow run, before any trial
    uri = f"{subsets_uri.rstrip('/')}/subsets/{manifest.task}/{manifest.seed}/manifest.json"
    return namedtuple("Outputs", ["manifest_uri", "journal_uri"])(uri, journal)
