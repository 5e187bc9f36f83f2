"""The study config: one YAML file, validated by pydantic, every error naming its field.

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

:func:`load_study_config` reads and validates it; :func:`config_from_journal` reads the one
a study's journal recorded (``ecotune resume --journal``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

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

from ecotune.decoding import SamplingParams
from ecotune.engines import EngineConfig
from ecotune.journal import JournalError, open_journal
from ecotune.optimizers import OPTIMIZERS
from ecotune.space import SearchSpace, SearchSpaceError
from ecotune.tasks import TaskConfig, task_config
from ecotune.tasks.registry import upgrade_flat_task_config

CONFIG_KEYS = ("decoding",) + tuple(
    k for k in SamplingParams.model_fields if k not in ("n", "seed", "stop")) + ("few_shot",)


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


class WarmStartConfig(BaseModel):
    """Start from an earlier study of the same model and task (see :mod:`ecotune.warmstart`).

    ``journal`` is that study's journal (local path or ``s3://``), or ``previous``: the
    study's previous scheduled run (pipeline runs; a study with no previous run starts
    cold). Its champion and best configs (``top_k`` in all) run first; with
    ``observations``, its scored trials are prior data when task, model, search space and
    fixed settings are the same (never charged to this study's budget).
    """

    model_config = ConfigDict(extra="forbid")

    journal: str = Field(min_length=1)
    top_k: int = Field(3, ge=0, le=50)
    observations: bool = True

    @model_validator(mode="after")
    def _takes_something(self) -> WarmStartConfig:
        if self.top_k == 0 and not self.observations:
            raise ValueError("takes nothing: set top_k > 0 or observations: true")
        return self


class EcoTuneSettings(BaseModel):
    """The settings only EcoTune's own optimizer takes (``None``: its default).

    A study config and the chart's study block (``components.chart_config``) both take them,
    from this one declaration; another optimizer refuses them (:class:`StudyConfig`), and
    the chart drops them for one (its defaults apply to every study).
    """

    model_config = ConfigDict(extra="forbid")

    tau: float | None = Field(None, ge=0)
    #: EcoTune's acquisition: ``lookahead`` (default) or ``paper`` (see ecotune.acquisition)
    acquisition: Literal["lookahead", "paper"] | None = None
    #: EcoTune stops trials that can no longer beat the incumbent (default: on)
    early_stopping: bool | None = None
    #: EcoTune prices a screen with what it commits to (ecotune.acquisition.completion_cost)
    completion_cost: bool | None = None
    #: what EcoTune counts a screen worth: ``lookahead`` (default) or ``finish``
    #: (ecotune.acquisition)
    screen_value: Literal["finish", "lookahead"] | None = None
    #: EcoTune's initial design goes on until this share of the budget is spent (default 0.25)
    init_share: float | None = Field(None, ge=0, lt=1)
    #: instances each config of EcoTune's initial design is scored on (in [r_min, r_max])
    init_fidelity: int | None = Field(None, ge=1)
    #: EcoTune's noise of a score over r instances: ``auto`` (default), ``binomial``,
    #: ``scaled``, ``shared`` or ``adjusted`` (ecotune.optimizers.ecotune; measured in
    #: docs/benchmarks.md)
    noise: Literal["auto", "binomial", "scaled", "shared", "adjusted"] | None = None
    #: when EcoTune asks its final full trial (eq. 8): ``paper`` (once T̂ ≤ 1),
    #: ``last`` (once the next step would leave less than the final's expected tokens) or
    #: ``rung`` (when ``paper`` would, after promoting the best configs one level up first)
    #: or ``auto`` (default: ``rung`` while trials tell their instance scores, as LLM trials do)
    final_trial: Literal["paper", "last", "rung", "auto"] | None = None


#: the keys of :class:`EcoTuneSettings`
ECOTUNE_ONLY = tuple(EcoTuneSettings.model_fields)


class StudyConfig(EcoTuneSettings):
    """One tuning study (see the module docstring for an example)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    #: a task name, or ``{name: ..., <that task's own options>}`` (see ecotune.tasks)
    task: TaskConfig
    engine: EngineSpec = Field(default_factory=LocalEngine)
    search_space: dict[str, Any] | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    budget_tokens: int = Field(gt=0)
    eta0: float = Field(0.1, gt=0)
    lam: float = Field(0.1, ge=0, alias="lambda")
    r_min: int = Field(5, ge=1)
    r_max: int = Field(50, ge=1)
    seed: int = 0
    optimizer: str = "ecotune"
    max_trials: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    #: stop the study after this many consecutive failed trials (stop reason
    #: ``failed_trials``): a broken engine fails every trial, each charged its worst case
    max_failed_trials: int | None = Field(None, ge=1)
    #: EcoTune runs the HELM default configuration (clipped into the space, the task's
    #: max_tokens) as its first trial, so a study never misses the default it should beat.
    start_from_default: bool = True
    #: a finite set of configs to choose from (vetted presets) instead of the whole space;
    #: each gives some of the searched settings, the rest take their neutral values.
    candidates: list[dict[str, Any]] | None = None
    #: start from an earlier study: ``{journal: <uri> | previous, top_k, observations}``
    warm_start: WarmStartConfig | None = None
    workdir: str = "runs"
    journal: str | None = None
    subsets: str | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> Any:
        return task_config(v)  # one message for unknown tasks and options, as make_task's

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
        if self.r_min > self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be <= r_max ({self.r_max})")
        if self.init_fidelity is not None and not self.r_min <= self.init_fidelity <= self.r_max:
            raise ValueError(f"init_fidelity ({self.init_fidelity}) must be within r_min "
                             f"({self.r_min}) and r_max ({self.r_max})")
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
        for k in (*ECOTUNE_ONLY, "warm_start"):
            if getattr(self, k) is not None and self.optimizer != "ecotune":
                raise ValueError(f"{k} applies only to optimizer 'ecotune'")
        if self.warm_start is not None and self.warm_start.journal == self.journal_uri:
            raise ValueError("warm_start.journal is this study's own journal (to go on "
                             "with a study, resume it)")
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
    if "task" in data:  # journals written before tasks had their own options hold them all
        data = {**data, "task": upgrade_flat_task_config(data["task"])}
    cfg = validate_study_config(data, uri)
    return with_overrides(cfg, journal=uri)
