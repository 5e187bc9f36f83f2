"""Promote a study's winning inference configuration in the MLflow model registry.

One registered model per served model and task (:func:`registered_model_name`). Each
promotion logs the config as a pyfunc model (:mod:`ecotune.tracking.pyfunc_model`),
registers it as a new version and gives it the alias ``challenger``. It also gets
``champion`` when

* no champion exists yet (the first promotion has nothing to beat, so the first
  registered config is champion by default), or
* it beats the current champion on the *same* held-out instances by a one-sided paired
  test (:mod:`ecotune.tracking.stats`) with ``p < alpha``.

A better but not significantly better score stays ``challenger``. The test, p-value, both
scores and n are recorded as version tags, so the registry explains every alias.

Example:
    >>> res = promote(registered_model_name("Qwen/Qwen2.5-0.5B", "mmlu"), best_config,
    ...               {"base_url": "http://vllm:8000", "model": "Qwen/Qwen2.5-0.5B"},
    ...               challenger_scores=[1, 0, 1, ...], champion_scores=[0, 0, 1, ...])
    ...                                                                  # doctest: +SKIP
    >>> res.promoted, res.p_value
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecotune.decoding import SamplingParams
from ecotune.tracking.mlflow_tracker import make_client, resolve_uris
from ecotune.tracking.params import is_secret_key, redact, to_params
from ecotune.tracking.stats import TestName, paired_test

CHAMPION, CHALLENGER = "champion", "challenger"
_PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
_PIP = ["mlflow==3.17.2", "httpx>=0.27"]


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`promote` did.

    Attributes:
        model_name: Registered model name.
        version: The new model version.
        aliases: Aliases the new version holds (``challenger``, maybe ``champion``).
        promoted: True when the version became ``champion``.
        p_value: One-sided p-value (``None`` when there was nothing to test against).
        test: Test that ran (``mcnemar``/``bootstrap``), ``None`` if none.
        challenger_score: Mean held-out score of the new config.
        champion_score: Mean held-out score of the champion on the same instances.
        n: Number of held-out instances.
        reason: Why it was or was not promoted, in words.
        previous_champion: Version that was champion before, if any.
    """

    model_name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    promoted: bool = False
    p_value: float | None = None
    test: str | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    n: int = 0
    reason: str = ""
    previous_champion: str | None = None


def registered_model_name(model: str, task: str, prefix: str = "ecotune") -> str:
    """``("Qwen/Qwen2.5-0.5B", "mmlu")`` -> ``"ecotune-Qwen-Qwen2.5-0.5B-mmlu"``."""
    raw = f"{prefix}-{model}-{task}"
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_.-]", "-", raw)).strip("-")


def _engine(engine: dict[str, Any]) -> dict[str, Any]:
    missing = {"base_url", "model"} - engine.keys()
    if missing:
        raise ValueError(f"engine needs {sorted(missing)}")
    secret = [k for k in engine if is_secret_key(k)]
    if secret:
        raise ValueError(f"engine must not carry secrets ({secret}); pass api_key_env, the "
                         "name of the environment variable that holds the key")
    return dict(engine)


def get_alias(client: Any, name: str, alias: str) -> Any | None:
    """The version holding ``alias`` or ``None`` (search results leave aliases empty, so
    ask the registry directly)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def log_config_model(client: Any, experiment_id: str, model_name: str, config: dict[str, Any],
                     engine: dict[str, Any], tags: dict[str, str]) -> tuple[str, str]:
    """Log the pyfunc model in a new run and register it; returns ``(run_id, version)``."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    sampling = SamplingParams.from_config(config).to_request(send_seed=True)
    model_config = {"engine": engine, "sampling": sampling, "config": config}
    run = client.create_run(experiment_id, run_name=f"promote-{model_name}", tags=tags)
    rid = run.info.run_id
    for k, v in to_params(config, "config.").items():
        client.log_param(rid, k, v)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        mlflow.pyfunc.save_model(str(path), python_model=str(_PYFUNC_FILE),
                                 model_config=model_config, pip_requirements=_PIP)
        client.log_artifacts(rid, str(path), "model")
    client.set_terminated(rid, "FINISHED")
    try:
        client.create_registered_model(model_name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(model_name, f"{run.info.artifact_uri}/model", run_id=rid,
                                     tags=tags)
    return rid, str(mv.version)


def promote(
    model_name: str,
    config: dict[str, Any],
    engine: dict[str, Any],
    challenger_scores: Sequence[float],
    champion_scores: Sequence[float] | None = None,
    alpha: float = 0.05,
    test: TestName = "mcnemar",
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    experiment: str = "ecotune-promotions",
    tags: dict[str, str] | None = None,
    local_dir: str = "mlruns",
    champion_alias: str = CHAMPION,
) -> PromotionResult:
    """Register ``config`` as a new version of ``model_name`` and set its aliases.

    Args:
        model_name: Registered model (see :func:`registered_model_name`).
        config: The winning inference config (search-space names).
        engine: ``base_url``, ``model`` and optionally ``api_key_env`` (a variable *name*);
            keys that look like secrets are refused.
        challenger_scores: Per held-out instance scores of ``config`` (0/1 or in [0, 1]).
        champion_scores: The current champion's scores on the same instances, same order.
            ``None`` while a champion exists means it cannot be beaten: stays challenger.
        alpha: Significance level of the one-sided paired test.
        test: ``"mcnemar"`` (exact, 0/1 scores) or ``"bootstrap"`` (paired, continuous).
        tags: Extra version/run tags (e.g. the study name).
        champion_alias: The alias the winner holds (the chart's ``mlflow.registry.alias``,
            e.g. ``production``); ``challenger`` always marks the newest version.

    Returns:
        A :class:`PromotionResult`.
    """
    engine = _engine(engine)
    uri, reg, art = resolve_uris(tracking_uri, registry_uri, local_dir)
    client = make_client(uri, reg)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, art)
    scores = [float(s) for s in challenger_scores]
    base_tags = {k: str(v) for k, v in (tags or {}).items()}
    _, version = log_config_model(client, exp_id, model_name, redact(config), engine, base_tags)
    client.set_registered_model_alias(model_name, CHALLENGER, version)

    current = get_alias(client, model_name, champion_alias)
    prev = str(current.version) if current is not None else None
    p = t = champ_score = None
    if current is None:
        promoted, reason = True, "first promotion: no champion to compare with"
    elif champion_scores is None:
        promoted, reason = False, "champion exists but no champion scores were given"
    else:
        res = paired_test(scores, [float(s) for s in champion_scores], test)
        p, t, champ_score = res.p_value, res.test, res.champion_score
        promoted = res.p_value < alpha
        reason = (f"{res.test} p={res.p_value:.4g} {'<' if promoted else '>='} alpha={alpha} "
                  f"vs champion v{prev}")
    ch_score = sum(scores) / len(scores) if scores else None
    vtags = {
        "ecotune.test": t or "none", "ecotune.p_value": "" if p is None else repr(p),
        "ecotune.alpha": str(alpha), "ecotune.n": str(len(scores)),
        "ecotune.challenger_score": "" if ch_score is None else repr(ch_score),
        "ecotune.champion_score": "" if champ_score is None else repr(champ_score),
        "ecotune.champion_version": prev or "", "ecotune.promoted": str(promoted).lower(),
        "ecotune.reason": reason, "ecotune.challenger_scores": json.dumps(scores)[:5000],
    }
    for k, v in vtags.items():
        client.set_model_version_tag(model_name, version, k, v)
    aliases = [CHALLENGER]
    if promoted:
        client.set_registered_model_alias(model_name, champion_alias, version)
        aliases.append(champion_alias)
    return PromotionResult(model_name, version, aliases, promoted, p, t, ch_score, champ_score,
                           len(scores), reason, prev)
