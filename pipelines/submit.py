"""Submit a study's EcoTune pipeline to Kubeflow Pipelines (the chart's CronJob / hook Job).

Usage::

    python -m pipelines.submit --config /etc/ecotune/study.yaml              # one run now
    python -m pipelines.submit --config /etc/ecotune/study.yaml --recurring  # (re)register
    python -m pipelines.submit --config ... --recurring --disabled           # registered, paused
    python -m pipelines.submit --config ... --delete-recurring   # uninstall: stop the schedule

The pipeline is compiled for the study at submit time (its GPU, tolerations, model cache and
Secret names are compile-time Kubernetes settings) unless ``kfp.pipeline_package`` names a
precompiled package. Environment: ``KFP_HOST``, ``KFP_NAMESPACE`` (override the config),
``ECOTUNE_STUDY`` (the study name, checked against the config), ``ECOTUNE_JOB_NAME`` (the
submit Job's name: a retried submit of the same Job gives the same run name, and finds it
already submitted), and the credentials: ``KFP_BEARER_TOKEN``, or
``KF_PIPELINES_SA_TOKEN_PATH`` (the projected ServiceAccount token the chart mounts), passed
to ``kfp.Client`` explicitly (with a host set, kfp would not read the token by itself).

A one-off run is not created while another run of the study is still pending or running
(scheduled runs must not overlap: they share the study's journal and budget); it is
skipped with exit code 0 and a line saying why.

A run is told which run of the study came before it (its ``journal_uri`` ends in
``#after=<previous run id>``, :func:`ecotune.continuation.continuation_uri`): when that
study stopped only because the pipeline's compiled rounds ran out (``max_rounds``) and its
budget is not spent, the new run continues it on the same journal; otherwise it starts a
new study, which ``warm_start: {journal: previous}`` warm-starts from the previous one.
A recurring run's runs get ``#after=latest`` and find the previous run themselves.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from components.chart_config import ChartConfig, ChartConfigError

DEFAULT_MAX_ROUNDS = 20

#: a study config: the validated model, or a dict validated on use
Config = ChartConfig | dict[str, Any]


class SubmitError(RuntimeError):
    """The study config or environment cannot be submitted."""


def load_config(path: str | os.PathLike[str]) -> ChartConfig:
    """Read and validate the chart's study config (:class:`ChartConfig`, ``version: 1``)."""
    try:
        return ChartConfig.load(path)
    except ChartConfigError as e:
        raise SubmitError(str(e)) from e


def _chart(cfg: Config) -> ChartConfig:
    try:
        return ChartConfig.of(cfg)
    except ChartConfigError as e:
        raise SubmitError(str(e)) from e


def pipeline_arguments(cfg: Config, batch_size: int = 4, previous_run: str | None = None
                       ) -> dict[str, Any]:
    """The pipeline's runtime parameters for a study config; ``previous_run``: the KFP run
    id of the study's previous run (its journal may be continued, or warm-start this one)."""
    from ecotune.continuation import continuation_uri

    c = _chart(cfg)
    st, name = c.storage, c.study.name
    if st.enabled:
        journal = continuation_uri(st.journal_uri or "", previous_run)
        subsets = st.artifacts_uri or st.journal_uri
    else:  # no shared storage: only meaningful for single-pod local runs
        journal, subsets = f"/tmp/ecotune/{name}/journal", f"/tmp/ecotune/{name}"
    return {"study": strip_nulls(c.dump()), "journal_uri": journal, "subsets_uri": subsets,
            "engine_url": c.engine.base_url, "batch_size": batch_size}


def strip_nulls(obj: Any) -> Any:
    """Drop ``null`` values (KFP parameters cannot hold them; absent means the same)."""
    if isinstance(obj, dict):
        return {k: strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [strip_nulls(v) for v in obj if v is not None]
    return obj


def make_client(cfg: Config) -> Any:
    """``kfp.Client`` for ``KFP_HOST``/``kfp.host`` with explicit credentials: the bearer
    token ``KFP_BEARER_TOKEN``, else the projected ServiceAccount token at
    ``KF_PIPELINES_SA_TOKEN_PATH`` (re-read on every request, so rotation works)."""
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    host = os.environ.get("KFP_HOST") or _chart(cfg).kfp.host
    if not host:
        raise SubmitError("no KFP host: set KFP_HOST or kfp.host")
    kw: dict[str, Any] = {"host": host, "namespace": namespace(cfg)}
    token = os.environ.get("KFP_BEARER_TOKEN") or None
    token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH") or None
    if token:
        kw["existing_token"] = token
    elif token_path:
        if not Path(token_path).is_file():
            raise SubmitError(f"KF_PIPELINES_SA_TOKEN_PATH={token_path}: no token file there")
        kw["credentials"] = ServiceAccountTokenVolumeCredentials(path=token_path)
    return kfp.Client(**kw)


def namespace(cfg: Config) -> str | None:
    return os.environ.get("KFP_NAMESPACE") or _chart(cfg).kfp.namespace or None


def package_for(cfg: Config, out_dir: str, max_rounds: int, parallelism: int) -> str:
    """A precompiled ``kfp.pipeline_package`` if set, else the pipeline compiled for the study."""
    c = _chart(cfg)
    pkg = c.kfp.pipeline_package
    if pkg:
        if not Path(pkg).exists():
            raise SubmitError(f"kfp.pipeline_package {pkg} does not exist")
        return str(pkg)
    from pipelines.compile import compile_pipeline
    from pipelines.ecotune_loop import PipelineOptions

    opts = PipelineOptions.from_study(c.dump(), max_rounds=max_rounds, parallelism=parallelism)
    return str(compile_pipeline(Path(out_dir) / "ecotune_loop.yaml", opts))


def submit(cfg: Config, client: Any, *, recurring: bool = False, disabled: bool = False,
           max_rounds: int = DEFAULT_MAX_ROUNDS, parallelism: int = 4, batch_size: int = 4,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Create one run, or create/replace the study's recurring run; returns what was done."""
    from ecotune.continuation import LATEST

    cfg = _chart(cfg)
    k, name = cfg.kfp, cfg.study.name
    prefix = k.run_name_prefix or f"ecotune-{name}"
    experiment = k.experiment or "ecotune"
    with tempfile.TemporaryDirectory(prefix="ecotune-submit-") as tmp:
        pkg = package_for(cfg, tmp, max_rounds, parallelism)
        exp = client.create_experiment(experiment, namespace=namespace(cfg))
        exp_id = exp.experiment_id
        common = {"pipeline_root": k.pipeline_root or None,
                  "service_account": k.service_account or None}
        if not recurring:
            key = os.environ.get("ECOTUNE_JOB_NAME") or \
                (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M")
            run_name = key if key.startswith(prefix) else f"{prefix}-{key}"
            runs = _list_runs(client, exp_id)
            busy = _active_or_same(runs, prefix, run_name)
            if busy is not None:
                return {"kind": "skipped", "name": run_name, "id": busy[0], "reason": busy[1]}
            previous = _latest_run(runs, prefix)
            args = pipeline_arguments(cfg, batch_size, previous.run_id if previous else None)
            run = client.run_pipeline(experiment_id=exp_id, job_name=run_name,
                                      pipeline_package_path=pkg, enable_caching=False,
                                      params=args, **common)
            done = {"kind": "run", "name": run_name, "id": run.run_id}
            if previous is not None:
                done["after"] = previous.run_id
            return done
        # a recurring run's parameters are fixed when it is registered: its runs cannot be
        # told the run before them, so each finds it under the journal prefix (#after=latest)
        # and continues or warm-starts from it like a CronJob's run
        common["params"] = pipeline_arguments(cfg, batch_size, LATEST)
        cron = cfg.schedule.cron
        if not cron:
            raise SubmitError("--recurring needs schedule.cron in the study config")
        job_name = f"{prefix}-recurring"
        for old in _recurring_runs(client, exp_id, job_name):
            client.delete_recurring_run(old)
        job = client.create_recurring_run(
            experiment_id=exp_id, job_name=job_name, cron_expression=_kfp_cron(cron),
            pipeline_package_path=pkg, max_concurrency=1, no_catchup=True,
            enabled=not disabled, enable_caching=False, **common)
        return {"kind": "recurring", "name": job_name, "id": job.recurring_run_id,
                "enabled": not disabled}


def delete_recurring(cfg: Config, client: Any) -> dict[str, Any]:
    """Delete the study's recurring run(s) (the chart's pre-delete hook: an uninstalled
    study must stop firing)."""
    cfg = _chart(cfg)
    k, name = cfg.kfp, cfg.study.name
    job_name = f"{k.run_name_prefix or f'ecotune-{name}'}-recurring"
    exp = client.create_experiment(k.experiment or "ecotune", namespace=namespace(cfg))
    gone = _recurring_runs(client, exp.experiment_id, job_name)
    for rid in gone:
        client.delete_recurring_run(rid)
    return {"kind": "deleted", "name": job_name, "id": ",".join(gone) or "none"}


def _kfp_cron(cron: str) -> str:
    """KFP cron has a seconds field: ``0 4 * * 1`` -> ``0 0 4 * * 1``."""
    parts = cron.split()
    return " ".join(["0", *parts]) if len(parts) == 5 else cron


#: run states in which a study's run still uses its journal and budget
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "PAUSED", "CANCELING",
                           "RUNTIME_STATE_UNSPECIFIED"})


def _list_runs(client: Any, exp_id: str) -> list[Any]:
    """Every run of the experiment (all pages)."""
    runs: list[Any] = []
    token = ""
    while True:
        resp = client.list_runs(experiment_id=exp_id, page_size=100, page_token=token)
        runs.extend(resp.runs or [])
        token = resp.next_page_token or ""
        if not token:
            return runs


def _active_or_same(runs: list[Any], prefix: str, run_name: str) -> tuple[str, str] | None:
    """(run id, why) of a run that makes a new one wrong: the same run already submitted (a
    retried submit), or a run of the study still active (runs must not overlap)."""
    for r in runs:
        name = r.display_name or ""
        if name == run_name:
            return r.run_id, f"run {name} was already submitted"
    for r in runs:
        name = r.display_name or ""
        if name.startswith(f"{prefix}-") and str(r.state or "").upper() in ACTIVE_STATES:
            return r.run_id, f"run {name} of this study is still {r.state}"
    return None


def _latest_run(runs: list[Any], prefix: str) -> Any | None:
    """The study's most recently created run (its journal may be continued), or None."""
    mine = [(i, r) for i, r in enumerate(runs)
            if (r.display_name or "").startswith(f"{prefix}-") and r.run_id]
    if not mine:
        return None
    return max(mine, key=lambda ir: (_created(ir[1]), ir[0]))[1]


def _created(run: Any) -> float:
    """A run's creation time in epoch seconds (kfp gives a datetime; 0 when absent)."""
    t = getattr(run, "created_at", None)
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if isinstance(t, dt.datetime):
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    return 0.0


def _recurring_runs(client: Any, exp_id: str, name: str) -> list[str]:
    resp = client.list_recurring_runs(experiment_id=exp_id, page_size=100)
    return [r.recurring_run_id for r in (resp.recurring_runs or []) if r.display_name == name]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="study config (/etc/ecotune/study.yaml)")
    p.add_argument("--recurring", action="store_true",
                   help="create or replace the study's KFP recurring run (schedule.cron)")
    p.add_argument("--disabled", action="store_true",
                   help="with --recurring: register it paused")
    p.add_argument("--delete-recurring", action="store_true",
                   help="delete the study's recurring run (uninstall)")
    p.add_argument("--max-rounds", type=int, default=DEFAULT_MAX_ROUNDS)
    p.add_argument("--parallelism", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4, help="trials asked per round")
    p.add_argument("--dry-run", action="store_true",
                   help="compile and print what would be submitted; no KFP call")
    a = p.parse_args(argv)
    if a.disabled and not a.recurring:
        p.error("--disabled needs --recurring")
    try:
        cfg = load_config(a.config)
        env_study = os.environ.get("ECOTUNE_STUDY")
        if env_study and env_study != cfg.study.name:
            raise SubmitError(f"ECOTUNE_STUDY={env_study} but the config is for study "
                              f"{cfg.study.name!r}")
        if a.dry_run:
            with tempfile.TemporaryDirectory() as tmp:
                pkg = package_for(cfg, tmp, a.max_rounds, a.parallelism)
                print(yaml.safe_dump({"package": pkg, "namespace": namespace(cfg),
                                      "arguments": {**pipeline_arguments(cfg, a.batch_size),
                                                    "study": "<study config>"}}))
            return 0
        if a.delete_recurring:
            done = delete_recurring(cfg, make_client(cfg))
        else:
            done = submit(cfg, make_client(cfg), recurring=a.recurring, disabled=a.disabled,
                          max_rounds=a.max_rounds, parallelism=a.parallelism,
                          batch_size=a.batch_size)
    except SubmitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if done["kind"] == "skipped":
        print(f"not submitted: {done['reason']} ({done['id']})")
        return 0
    if done["kind"] == "deleted":
        print(f"deleted recurring run {done['name']} ({done['id']})")
        return 0
    after = f", after run {done['after']}" if done.get("after") else ""
    print(f"submitted {done['kind']} {done['name']} ({done['id']}{after})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
