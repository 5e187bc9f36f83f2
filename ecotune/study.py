"""A study from one YAML file: config model, validation, and the in-process tuning run.

Example ``study.yaml``::

    name: demo
    task: {name: arithmetic, n: 200}
    engine: local                      # or {base_url: http://vllm:8000, model: Qwen/...}
    budget_tokens: 20000
    r_min: 5
    r_max: 40
    optimizer: ecotune
    tracking: {enabled: true}
    promotion: {enabled: true, held_out: 40}

:func:`load_study_config` reads and validates it (errors name the field and the fix);
:func:`run_tune` runs it: engine up and checked, task and nested order built, budget checked
against one instance's worst case, optimizer made (or resumed) from the journal, trials run
with MLflow tracking and a progress display, and the winner optionally promoted in the
MLflow registry after a held-out comparison with the current champion.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from ecotune.engines import EngineConfig, EngineError, make_engine
from ecotune.journal import JournalError, open_journal
from ecotune.optimizers import OPTIMIZERS
from ecotune.sampling import SamplingParams
from ecotune.space import SearchSpace, SearchSpaceError, default_llm_space
from ecotune.tasks import TASKS, TaskConfig, TaskDataError, make_task
from ecotune.tasks.base import Task
from ecotune.trial import TrialStatus

CONFIG_KEYS = ("decoding",) + tuple(
    k for k in SamplingParams.model_fields if k not in ("n", "seed", "stop")) + ("few_shot",)


log = logging.getLogger(__name__)


class StudyConfigError(ValueError):
    """The study config (or the command line) is wrong; the message says how to fix it."""


class StudyError(RuntimeError):
    """The study could not run (engine down, journal unreadable, storage error, ...)."""


# ---------------------------------------------------------------------------------- config
class LocalEngine(BaseModel):
    """The embedded engine: SmolLM2-135M-Instruct on a vLLM (CPU) server the study starts.

    If ``ECOTUNE_VLLM_URL`` is set, the server there is used instead of starting one.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local"] = "local"
    port: int | None = None
    model_dir: str | None = None
    max_model_len: int = Field(2048, ge=128)
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    startup_timeout_s: float = Field(300.0, gt=0)


def _engine_kind(v: Any) -> str:
    if v == "local" or isinstance(v, LocalEngine):
        return "local"
    if isinstance(v, dict) and v.get("kind") == "local":
        return "local"
    return "server"


def _engine_pre(v: Any) -> Any:
    if v == "local":
        return {"kind": "local"}
    if v is None or isinstance(v, (dict, LocalEngine, EngineConfig)):
        return v
    raise ValueError("engine must be 'local' or a mapping with base_url and model")


EngineSpec = Annotated[
    Annotated[LocalEngine, Tag("local")] | Annotated[EngineConfig, Tag("server")],
    Discriminator(_engine_kind),
]


class TrackingConfig(BaseModel):
    """MLflow tracking. Without ``tracking_uri`` (and no ``MLFLOW_TRACKING_URI``) a local
    SQLite store in ``local_dir`` (default ``<workdir>/mlruns``) is used."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    experiment: str = "ecotune"
    tracking_uri: str | None = None
    registry_uri: str | None = None
    local_dir: str | None = None


class PromotionConfig(BaseModel):
    """Register the winner in the MLflow model registry after a held-out comparison.

    ``held_out`` instances come after ``r_max`` in the nested order (never used for
    tuning); the winner becomes ``champion`` if it beats the current one by a one-sided
    paired ``test`` at level ``alpha`` (or if there is none yet).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    held_out: int = Field(50, ge=1)
    test: Literal["mcnemar", "bootstrap"] = "mcnemar"
    alpha: float = Field(0.05, gt=0, lt=1)
    model_name: str | None = None
    experiment: str = "ecotune-promotions"


class CacheConfig(BaseModel):
    """The response cache of deterministic answers (see :mod:`ecotune.cache`)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    #: where entries live (local folder or ``s3://``); default ``<workdir>/cache``, shared
    #: by every study of the workdir, so later studies of the same model reuse answers
    uri: str | None = None


class StudyConfig(BaseModel):
    """One tuning study (see the module docstring for an example)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    task: TaskConfig
    engine: EngineSpec = Field(default_factory=LocalEngine)
    search_space: dict[str, Any] | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    budget_tokens: int = Field(gt=0)
    tau: float | None = Field(None, ge=0)
    #: EcoTune's acquisition: ``lookahead`` (default) or ``paper`` (see ecotune.acquisition)
    acquisition: Literal["lookahead", "paper"] | None = None
    #: EcoTune stops trials that can no longer beat the incumbent (default: on)
    early_stopping: bool | None = None
    eta0: float = Field(0.1, gt=0)
    lam: float = Field(0.1, ge=0, alias="lambda")
    r_min: int = Field(5, ge=1)
    r_max: int = Field(50, ge=1)
    seed: int = 0
    optimizer: str = "ecotune"
    max_trials: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    #: EcoTune runs the HELM default configuration (clipped into the space, the task's
    #: max_tokens) as its first trial, so a study never misses the default it should beat.
    start_from_default: bool = True
    #: a finite set of configs to choose from (vetted presets) instead of the whole space;
    #: each gives some of the searched settings, the rest take their neutral values.
    candidates: list[dict[str, Any]] | None = None
    workdir: str = "runs"
    journal: str | None = None
    subsets: str | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, v: Any) -> Any:
        return _engine_pre(v)

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; choose one of {', '.join(OPTIMIZERS)}")
        return v

    @field_validator("fixed")
    @classmethod
    def _fixed(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) - set(CONFIG_KEYS))
        if bad:
            raise ValueError(f"unknown setting(s) {bad}; known: {', '.join(CONFIG_KEYS)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        if self.task.name not in TASKS:
            raise ValueError(f"task.name: unknown task {self.task.name!r}; known tasks: "
                             f"{', '.join(sorted(TASKS))}")
        if self.r_min > self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be <= r_max ({self.r_max})")
        if self.search_space is not None:
            try:
                space = SearchSpace.from_dict(self.search_space)
            except SearchSpaceError as e:
                raise ValueError(f"search_space: {e}") from None
            unknown = sorted(set(space.names) - set(CONFIG_KEYS))
            if unknown:
                raise ValueError(f"search_space: unknown parameter(s) {unknown}; known: "
                                 f"{', '.join(CONFIG_KEYS)}")
            both = sorted(set(space.names) & set(self.fixed))
            if both:
                raise ValueError(f"{both} both searched and fixed; keep each in one place")
        for k in ("tau", "acquisition", "early_stopping"):
            if getattr(self, k) is not None and self.optimizer != "ecotune":
                raise ValueError(f"{k} applies only to optimizer 'ecotune'")
        return self

    # -- derived locations ------------------------------------------------------------
    @property
    def study_dir(self) -> str:
        return _join(self.workdir, self.name)

    @property
    def journal_uri(self) -> str:
        if self.journal:
            return self.journal
        # S3 journals are a prefix (one object per record); local ones a JSONL file
        leaf = "journal" if self.workdir.startswith("s3://") else "journal.jsonl"
        return _join(self.study_dir, leaf)

    @property
    def subsets_uri(self) -> str:
        return self.subsets or self.study_dir

    @property
    def cache_uri(self) -> str | None:
        if not self.cache.enabled:
            return None
        return self.cache.uri or _join(self.workdir, "cache")

    @property
    def mlflow_local_dir(self) -> str:
        return self.tracking.local_dir or _join(self.workdir, "mlruns")

    def dump(self) -> dict[str, Any]:
        """JSON-safe dict that :meth:`model_validate` reads back (``lambda`` by alias)."""
        return self.model_dump(mode="json", by_alias=True)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if base.startswith("s3://") else str(Path(base) / name)


def _pretty(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if x not in ("local", "server"))
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        msg = msg.replace(": Value error, ", ": ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def validate_study_config(data: Any, source: str = "config") -> StudyConfig:
    """Validate a dict; :class:`StudyConfigError` with every problem on one line."""
    if not isinstance(data, dict):
        raise StudyConfigError(f"{source}: a study config must be a mapping (key: value), "
                               f"got {type(data).__name__}")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        raise StudyConfigError(f"{source}: invalid study config: {_pretty(e)}") from None


def load_study_config(path: str | os.PathLike[str], **overrides: Any) -> StudyConfig:
    """Read and validate a study YAML file; ``overrides`` (not None) replace top-level keys."""
    p = Path(path)
    if not p.exists():
        raise StudyConfigError(f"config file not found: {p}")
    if not p.is_file():
        raise StudyConfigError(f"config path is not a file: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StudyConfigError(f"{p}: YAML does not parse{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StudyConfigError(f"{p}: cannot read: {e}") from None
    if data is None:
        raise StudyConfigError(f"{p}: the file is empty")
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return validate_study_config(data, str(p))


def with_overrides(cfg: StudyConfig, **overrides: Any) -> StudyConfig:
    """A copy with top-level keys replaced (and validated again)."""
    upd = {k: v for k, v in overrides.items() if v is not None}
    return validate_study_config({**cfg.dump(), **upd}) if upd else cfg


def config_from_journal(uri: str) -> StudyConfig:
    """The study config recorded in a journal's header (for ``ecotune resume --journal``)."""
    try:
        recs = open_journal(uri).records()
    except (JournalError, OSError) as e:
        raise StudyError(f"cannot read journal {uri}: {e}") from e
    head = next((r for r in recs if r.get("type") == "study"), None)
    if head is None:
        raise StudyConfigError(f"no study journal at {uri}")
    data = head.get("study_config")
    if not isinstance(data, dict):
        raise StudyConfigError(f"{uri}: the journal holds no study config; resume with --config")
    cfg = validate_study_config(data, uri)
    return with_overrides(cfg, journal=uri)


# ---------------------------------------------------------------------------------- pieces
def default_space(task: Task) -> SearchSpace:
    """:func:`default_llm_space` sized for the task: ``max_tokens`` around the task default,
    ``few_shot`` up to the task's pool when the task uses in-context examples."""
    d = int(task.default_max_tokens)
    low, high = max(1, d // 4), min(2048, max(2 * d, 4))
    shots = getattr(task, "pool_size", None) or getattr(task, "max_shots", None)
    if shots is None and task.default_few_shot > 0:
        shots = max(task.default_few_shot, 5)
    return default_llm_space(max_tokens=(low, high), few_shot=int(shots) if shots else None)


def build_task(cfg: StudyConfig) -> tuple[Task, list[str]]:
    """The task and its nested order; checks the fidelity range fits the data."""
    from ecotune.sampler import SubsetError, build_subsets, nested_order

    try:
        task = make_task(cfg.task)
        instances = task.instances()
    except (TaskDataError, ValueError, KeyError, FileNotFoundError) as e:
        raise StudyConfigError(f"task {cfg.task.name!r}: {e}") from None
    n = len(instances)
    if cfg.r_max > n:
        raise StudyConfigError(f"r_max ({cfg.r_max}) is larger than task {task.key!r} "
                               f"({n} instances); lower r_max")
    if cfg.promotion.enabled and cfg.r_max + cfg.promotion.held_out > n:
        raise StudyConfigError(
            f"promotion needs {cfg.promotion.held_out} held-out instances after r_max "
            f"({cfg.r_max}) but task {task.key!r} has {n}; lower promotion.held_out or r_max")
    order = nested_order(instances, cfg.seed)
    try:
        build_subsets(task, cfg.r_max, cfg.seed, cfg.subsets_uri)
    except SubsetError as e:
        raise StudyError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - storage (S3) errors
        raise StudyError(f"cannot write subsets to {cfg.subsets_uri}: {e}") from e
    return task, order


def study_space(cfg: StudyConfig, task: Task) -> tuple[SearchSpace, dict[str, Any]]:
    """The search space and the fixed settings (``max_tokens`` pinned to the task default
    when it is neither searched nor fixed)."""
    space = SearchSpace.from_dict(cfg.search_space) if cfg.search_space else default_space(task)
    fixed = dict(cfg.fixed)
    if "max_tokens" not in space.params and "max_tokens" not in fixed:
        fixed["max_tokens"] = int(task.default_max_tokens)
    return space, fixed


def _low(space: SearchSpace, fixed: dict[str, Any], name: str, default: int) -> int:
    p = space.params.get(name)
    if p is not None and hasattr(p, "low"):
        return int(p.low)
    if p is not None and hasattr(p, "choices"):
        return int(min(p.choices))
    return int(fixed.get(name, default))


@contextmanager
def engine_session(cfg: StudyConfig, say: Any = print) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Start (``local``) or connect to the engine and check it; yields ``(engine, spec)``
    where ``spec`` (base_url, model, api_key_env) is what a promoted model records."""
    server = None
    try:
        if isinstance(cfg.engine, LocalEngine):
            from ecotune.serve_local import SERVED_MODEL_NAME, LocalVLLM, ServeError, prepare_model

            url = os.environ.get("ECOTUNE_VLLM_URL")
            if url:
                base = url.rstrip("/").removesuffix("/v1")
                say(f"engine: embedded model on the running local server {base} (ECOTUNE_VLLM_URL)")
            else:
                try:
                    model_dir = prepare_model(cfg.engine.model_dir)
                    server = LocalVLLM(model_dir, cfg.engine.port,
                                       max_model_len=cfg.engine.max_model_len,
                                       startup_timeout_s=cfg.engine.startup_timeout_s)
                    say(f"engine: starting embedded vLLM ({SERVED_MODEL_NAME}, CPU; about 40 s; "
                        f"log {server.log_path})")
                    t0 = time.monotonic()
                    base = server.start()
                except ServeError as e:
                    raise StudyError(f"embedded engine did not start: {e}") from e
                say(f"engine: ready at {base} after {time.monotonic() - t0:.0f} s")
            ec = EngineConfig(base_url=base, model=SERVED_MODEL_NAME, send_seed=False,
                              max_concurrency=cfg.engine.max_concurrency,
                              timeout_s=cfg.engine.timeout_s)
        else:
            ec = cfg.engine
        try:
            engine = make_engine(ec)
            engine.check()
        except EngineError as e:
            raise StudyError(f"engine check failed: {e}") from e
        spec = {"base_url": ec.base_url, "model": ec.model}
        if ec.api_key_env:
            spec["api_key_env"] = ec.api_key_env
        try:
            yield engine, spec
        finally:
            engine.close()
    finally:
        if server is not None:
            say("engine: stopping embedded vLLM")
            server.stop()


class _Tracking:
    """run_study callback mirroring the study into MLflow."""

    def __init__(self, tracker: Any):
        self.tracker = tracker

    def on_trial_end(self, opt: Any, trial: Any, result: Any) -> None:
        self.tracker.on_trial_end(trial, result, cumulative_tokens=opt.tokens_used,
                                  best_score=opt.best()[1])

    def on_study_end(self, opt: Any) -> None:
        trials = [{"trial": opt.trials[i].to_dict(), "result": opt.results[i].to_dict()}
                  for i in sorted(opt.results)]
        self.tracker.on_study_end({**opt.summary(), "r_max": opt.r_max}, trials)


def make_tracker(cfg: StudyConfig) -> Any:
    from ecotune.tracking import MlflowTracker

    t = cfg.tracking
    return MlflowTracker(experiment=t.experiment, tracking_uri=t.tracking_uri,
                         registry_uri=t.registry_uri, local_dir=cfg.mlflow_local_dir)


def best_from_journal(records: list[dict[str, Any]], r_max: int) -> tuple[dict | None, float | None]:
    """(config, score) of the best trial at the highest fidelity reached (as ``opt.best``)."""
    asks = {int(r["trial"]["id"]): r["trial"] for r in records if r.get("type") == "ask"}
    scored = []
    for r in records:
        if r.get("type") != "tell" or int(r["trial_id"]) not in asks:
            continue
        res = r["result"]
        if res.get("score") is None or res.get("status") == str(TrialStatus.FAILED):
            continue
        scored.append((int(r["trial_id"]), int(res["n_evaluated"]), float(res["score"])))
    if not scored:
        return None, None
    top = min(max(n for _, n, _ in scored), r_max)
    tid, _, score = max((s for s in scored if s[1] >= top), key=lambda s: (s[2], -s[0]))
    return dict(asks[tid]["config"]), score


# ---------------------------------------------------------------------------------- promotion
def champion_config(model_name: str, tracking_uri: str, registry_uri: str) -> dict[str, Any] | None:
    """The config of the registry's ``champion`` version of ``model_name`` (None if none)."""
    import tempfile

    from ecotune.tracking.mlflow_tracker import make_client
    from ecotune.tracking.registry import CHAMPION, get_alias

    client = make_client(tracking_uri, registry_uri)
    try:
        mv = get_alias(client, model_name, CHAMPION)
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
    from ecotune.runner import evaluate_config
    from ecotune.tracking.mlflow_tracker import resolve_uris
    from ecotune.tracking.registry import promote, registered_model_name

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


# ---------------------------------------------------------------------------------- run
def _printer(stream: TextIO) -> Any:
    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)
    return say


def run_tune(config: StudyConfig, resume: bool = False, *, stream: TextIO | None = None,
             live: bool | None = None) -> dict[str, Any]:
    """Run (or resume) a study end to end; returns its summary (see module docstring).

    Raises:
        StudyConfigError: the config does not fit the task/budget, or a journal exists
            (new study) / is missing (resume).
        StudyError: engine, storage or journal failures.
        KeyboardInterrupt: passed through; the journal stays consistent for ``resume``.
    """
    from ecotune.cache import ResponseCache
    from ecotune.optimizers import make_optimizer
    from ecotune.progress import StudyProgress
    from ecotune.prompt_tokens import PromptTokens
    from ecotune.runner import EngineEvaluator
    from ecotune.tuner import run_study

    cfg = config
    stream = stream or sys.stdout
    say = _printer(stream)
    juri = cfg.journal_uri
    try:
        records = open_journal(juri).records()
    except (JournalError, OSError) as e:
        raise StudyError(f"cannot read journal {juri}: {e}") from e
    except Exception as e:  # noqa: BLE001 - S3 errors
        raise StudyError(f"cannot read journal {juri}: {e}") from e
    if records and not resume:
        raise StudyConfigError(
            f"a study journal already exists at {juri}; run `ecotune resume --config <file>` "
            "to continue it, or change `name` (or `journal`) to start a new study")
    if resume and not records:
        raise StudyConfigError(f"nothing to resume: no journal at {juri}; start the study "
                               "with `ecotune tune --config <file>`")

    task, order = build_task(cfg)
    try:
        space, fixed = study_space(cfg, task)
    except SearchSpaceError as e:
        raise StudyConfigError(f"search_space: {e}") from None

    with engine_session(cfg, say) as (engine, engine_spec):
        # exact prompt sizes: budget check and the cost model's prior
        inst = {i.id: i for i in task.instances()}
        base_cfg = dict(fixed)
        fs = space.params.get("few_shot")
        if fs is not None and hasattr(fs, "low"):
            base_cfg["few_shot"] = min(max(task.default_few_shot, int(fs.low)), int(fs.high))
        try:
            counts = engine.count_prompt_tokens(
                [task.build_prompt(inst[i], base_cfg) for i in order[:cfg.r_max]])
            small = {**base_cfg, "few_shot": _low(space, fixed, "few_shot",
                                                  task.default_few_shot)}
            p_min = engine.count_prompt_tokens([task.build_prompt(inst[order[0]], small)])[0]
        except EngineError as e:
            raise StudyError(f"engine failed counting prompt tokens: {e}") from e
        m_min = _low(space, fixed, "max_tokens", task.default_max_tokens)
        worst = int(p_min) + m_min
        if cfg.budget_tokens < worst:
            raise StudyConfigError(
                f"budget_tokens ({cfg.budget_tokens}) is below the worst case of a single "
                f"instance ({p_min} prompt + {m_min} max_tokens = {worst} tokens); raise "
                f"budget_tokens (a useful study needs at least r_max x that, about "
                f"{worst * cfg.r_max:,})")
        hint = sum(counts) / max(1, len(counts))

        tags = {"ecotune.model": engine_spec["model"], "ecotune.task": task.key,
                "ecotune.optimizer": cfg.optimizer}
        spec = {k: v for k, v in cfg.dump().items() if k != "search_space"}
        spec.update(space=space.to_dict(), fixed=fixed, study=cfg.name)
        options: dict[str, Any] = dict(max_trials=cfg.max_trials, eta0=cfg.eta0, lam=cfg.lam,
                                       patience=cfg.patience, fixed=fixed,
                                       prompt_tokens_hint=hint,
                                       prompt_tokens=PromptTokens(task, engine,
                                                                  order[:cfg.r_max]))
        for k in ("tau", "acquisition", "early_stopping"):
            if getattr(cfg, k) is not None:
                options[k] = getattr(cfg, k)
        if cfg.candidates is not None:
            options["candidates"] = cfg.candidates
        if cfg.optimizer == "ecotune" and cfg.start_from_default:
            from ecotune.space import helm_default

            options["initial_configs"] = [helm_default(space, task.default_max_tokens)]
        try:
            opt = make_optimizer(cfg.optimizer, space=space, budget_tokens=cfg.budget_tokens,
                                 r_min=cfg.r_min, r_max=cfg.r_max, seed=cfg.seed, journal=juri,
                                 study_name=cfg.name,
                                 header_extra={"spec": spec, "tags": tags,
                                               "study_config": cfg.dump()},
                                 **options)
        except JournalError as e:
            raise StudyConfigError(f"{e}; resume with the config the study was started with "
                                   "(or `ecotune resume --journal PATH`)") from e
        except ValueError as e:
            raise StudyConfigError(str(e)) from e

        callbacks: list[Any] = []
        if cfg.tracking.enabled:
            tracker = make_tracker(cfg)
            tracker.on_study_start(cfg.name, spec, tags)
            if resume:
                tracker.sync_from_journal(open_journal(juri).records())
            callbacks.append(_Tracking(tracker))

        progress = StudyProgress(cfg.budget_tokens, title=cfg.name, stream=stream, live=live)
        cache = (ResponseCache.open(cfg.cache_uri, engine_spec["model"],
                                    seeded=bool(getattr(engine, "send_seed", False)))
                 if cfg.cache_uri else None)
        evaluator = EngineEvaluator(task, engine, order[:cfg.r_max], journal=juri,
                                    max_in_flight=getattr(engine, "max_concurrency", 8),
                                    on_instance=progress.on_instance, cache=cache)
        callbacks.append(progress)
        progress.start(opt, resumed=resume)
        try:
            summary = run_study(opt, progress.wrap(evaluator, opt), callbacks)
        finally:
            progress.stop()
        summary = {**summary, "study": cfg.name, "journal": juri, "r_max": cfg.r_max,
                   "task": task.key, "model": engine_spec["model"]}

        extra: dict[str, Any] = {"journal": juri}
        if cfg.tracking.enabled:
            extra["mlflow"] = f"{tracker.tracking_uri} (experiment {cfg.tracking.experiment})"
        if cfg.promotion.enabled:
            best = summary.get("best_config")
            if best is None:
                summary["promotion"] = {"promoted": False, "reason": "no scored trial"}
            else:
                summary["promotion"] = run_promotion(cfg, task, engine, engine_spec, order,
                                                     best, say)
            p = summary["promotion"]
            if "version" in p:
                extra["promotion"] = (
                    f"{p['model_name']} v{p['version']} {'+'.join(p['aliases'])}; "
                    f"held-out {p['challenger_score']:.3f}"
                    + (f" vs champion {p['champion_score']:.3f}"
                       if p.get("champion_score") is not None else "")
                    + f" ({p['reason']})")
            else:
                extra["promotion"] = p["reason"]
        progress.summary(summary, extra)
    return summary


def run_promote(config: StudyConfig, *, stream: TextIO | None = None) -> dict[str, Any]:
    """Only the promotion step, for the best config in the study's journal."""
    cfg = config
    say = _printer(stream or sys.stdout)
    try:
        records = open_journal(cfg.journal_uri).records()
    except Exception as e:  # noqa: BLE001
        raise StudyError(f"cannot read journal {cfg.journal_uri}: {e}") from e
    if not records:
        raise StudyConfigError(f"no journal at {cfg.journal_uri}: run `ecotune tune` first")
    best, score = best_from_journal(records, cfg.r_max)
    if best is None:
        raise StudyError(f"{cfg.journal_uri}: no scored trial to promote")
    if not cfg.promotion.enabled:
        cfg = with_overrides(cfg, promotion={**cfg.promotion.model_dump(), "enabled": True})
    task, order = build_task(cfg)
    with engine_session(cfg, say) as (engine, engine_spec):
        out = run_promotion(cfg, task, engine, engine_spec, order, best, say)
    say(f"promotion: {out['model_name']} v{out['version']} aliases={','.join(out['aliases'])} "
        f"held-out score {out['challenger_score']:.3f} (tuning score {score:.3f}); "
        f"{out['reason']}")
    return {"best_config": best, "best_score": score, "promotion": out}
