"""Promotion after a study: score the winner and the current champion on the same held-out
instances (never used for tuning), and let :func:`ecotune.tracking.registry.promote` decide
with a paired test."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from ecotune.config import StudyConfig, StudyConfigError, StudyError
from ecotune.journal import open_journal
from ecotune.tasks.base import Task

log = logging.getLogger(__name__)


def champion_config(model_name: str, tracking_uri: str | None, registry_uri: str | None,
                    alias: str = "champion") -> dict[str, Any] | None:
    """The config of the registry's ``alias`` version of ``model_name`` (None if none)."""
    import tempfile

    from ecotune.tracking.mlflow_tracker import make_client
    from ecotune.tracking.registry import get_alias

    client = make_client(tracking_uri, registry_uri)
    try:
        mv = get_alias(client, model_name, alias)
    except Exception as e:  # noqa: BLE001 - no such registered model yet
        log.debug("no champion of %s: %s", model_name, e)
        return None
    if mv is None:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(mv.run_id, "model/MLmodel", tmp)
            meta = yaml.safe_load(Path(path).read_text()) or {}
        mc = (meta.get("flavors", {}).get("python_function", {}).get("model_config") or {})
        if isinstance(mc.get("config"), dict):
            return dict(mc["config"])
    except Exception as e:  # noqa: BLE001 - fall back to the run's params
        log.warning("champion %s v%s: no model config in its artefact (%s); using the "
                    "run's params", model_name, mv.version, e)
    params = client.get_run(mv.run_id).data.params
    cfg = {k[len("config."):]: yaml.safe_load(v) for k, v in params.items()
           if k.startswith("config.")}
    return cfg or None


def run_promotion(cfg: StudyConfig, task: Task, engine: Any, engine_spec: dict[str, Any],
                  order: list[str], best_config: dict[str, Any], say: Any = print
                  ) -> dict[str, Any]:
    """Score the winner (and the champion) on the held-out instances and call
    :func:`ecotune.tracking.registry.promote`; returns what happened."""
    from ecotune.tracking.mlflow_tracker import resolve_uris
    from ecotune.tracking.registry import promote, registered_model_name
    from ecotune.trial_runner import evaluate_config

    held = order[cfg.r_max: cfg.r_max + cfg.promotion.held_out]
    if len(held) < cfg.promotion.held_out:
        raise StudyConfigError(f"only {len(held)} held-out instances after r_max={cfg.r_max}")
    t = cfg.tracking
    uri, reg, _ = resolve_uris(t.tracking_uri, t.registry_uri, cfg.mlflow_local_dir)
    name = cfg.promotion.model_name or registered_model_name(engine_spec["model"], task.key)
    mi = getattr(engine, "max_concurrency", 8)
    say(f"promotion: scoring the winner on {len(held)} held-out instances")
    try:
        chal = evaluate_config(task, engine, best_config, held, max_in_flight=mi)
        champ_cfg = champion_config(name, uri, reg)
        champ = None
        if champ_cfg is not None:
            say("promotion: scoring the current champion on the same instances")
            champ = evaluate_config(task, engine, champ_cfg, held, max_in_flight=mi)
    except Exception as e:  # noqa: BLE001
        raise StudyError(f"held-out evaluation failed: {e}") from e
    res = promote(name, best_config, engine_spec, chal.instance_scores,
                  champ.instance_scores if champ else None, alpha=cfg.promotion.alpha,
                  test=cfg.promotion.test, tracking_uri=t.tracking_uri,
                  registry_uri=t.registry_uri, experiment=cfg.promotion.experiment,
                  tags={"ecotune.study": cfg.name, "ecotune.task": task.key},
                  local_dir=cfg.mlflow_local_dir)
    out = {"model_name": res.model_name, "version": res.version, "aliases": res.aliases,
           "promoted": res.promoted, "p_value": res.p_value, "test": res.test,
           "challenger_score": res.challenger_score, "champion_score": res.champion_score,
           "n": res.n, "reason": res.reason, "previous_champion": res.previous_champion,
           "held_out_tokens": chal.tokens + (champ.tokens if champ else 0)}
    try:
        open_journal(cfg.journal_uri).append({"type": "promotion",
                                              "key": f"promotion:{uuid.uuid4().hex}",
                                              "config": best_config, **out, "time": time.time()})
    except Exception as e:  # noqa: BLE001 - the registry holds the outcome anyway
        log.warning("promotion outcome not written to the journal %s: %s",
                    cfg.journal_uri, e)
    return out


def held_out_promotion(model_name: str, config: dict[str, Any], task: Task, engine: Any,
                       engine_spec: dict[str, Any], held: list[str], *,
                       tracking_uri: str | None = None, registry_uri: str | None = None,
                       alias: str = "champion", experiment: str = "ecotune-promotions",
                       tags: dict[str, str] | None = None, test: str = "mcnemar",
                       alpha: float = 0.05, max_in_flight: int = 8) -> dict[str, Any]:
    """Score ``config`` and the registry's ``alias`` holder on the same held-out instances
    and promote by the paired test (the pipeline's finalize step; ``run_promotion`` is the
    in-process one). Returns what happened, held-out tokens included."""
    from ecotune.tracking.registry import promote
    from ecotune.trial_runner import evaluate_config

    chal = evaluate_config(task, engine, config, held, max_in_flight=max_in_flight)
    champ_cfg = champion_config(model_name, tracking_uri, registry_uri, alias)
    champ = (evaluate_config(task, engine, champ_cfg, held, max_in_flight=max_in_flight)
             if champ_cfg is not None else None)
    res = promote(model_name, config, engine_spec, chal.instance_scores,
                  champ.instance_scores if champ else None, alpha=alpha, test=test,
                  tracking_uri=tracking_uri, registry_uri=registry_uri, experiment=experiment,
                  tags=tags, champion_alias=alias)
    return {"model": res.model_name, "version": res.version, "aliases": list(res.aliases),
            "promoted": res.promoted, "reason": res.reason, "p_value": res.p_value,
            "challenger_score": res.challenger_score, "champion_score": res.champion_score,
            "n": res.n, "held_out_tokens": chal.tokens + (champ.tokens if champ else 0)}
