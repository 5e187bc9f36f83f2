"""The chart's study config (``/etc/ecotune/study.yaml``, ``version: 1``) as one pydantic model.

The Helm chart renders it (``helm/ecotune/templates/configmap-studies.yaml``); the submitter
(``pipelines.submit``) and the compiler (``pipelines.compile --study``) load it with
:meth:`ChartConfig.load`; the submitter hands :meth:`ChartConfig.dump` to the pipeline as its
``study`` parameter, and every component validates that again with :meth:`ChartConfig.of`
(a KFP Struct turns integers into floats and has no nulls; the model reads both back).

Its ``study`` block becomes the library's :class:`~ecotune.config.StudyConfig`
(:meth:`ChartConfig.study_config`), so a pipeline builds its optimizer the way
``ecotune tune`` does (:func:`ecotune.construct.build_optimizer`), and a study block the
library would refuse is refused at submit time, naming the field.

The blocks the pipeline's code reads are closed (an unknown key is an error: a typo must
not change a study silently); ``kfp`` and ``engine.gpu_evaluator`` carry the pods'
Kubernetes settings through to :meth:`pipelines.options.PipelineOptions.from_study`, which
reads them, and stay open.

Example:
    >>> cfg = ChartConfig.load("/etc/ecotune/study.yaml")          # doctest: +SKIP
    >>> cfg.study.name, cfg.engine.base_url                         # doctest: +SKIP
    >>> study = cfg.study_config(journal_uri="s3://b/llama/journal/run-1")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ecotune.config import ECOTUNE_ONLY, EcoTuneSettings, StudyConfigError, validate_study_config


class ChartConfigError(ValueError):
    """The study config is not a valid version 1 chart config; the message names the field."""


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SecretRef(_Closed):
    """A key of a Kubernetes Secret (the value never appears in the config)."""

    name: str
    key: str | None = None


class ChartStudy(_Closed, EcoTuneSettings):
    """The ``study:`` block: what the optimizer is built from (see ``ecotune.config``); the
    EcoTune-only settings are the library's :class:`~ecotune.config.EcoTuneSettings`."""

    name: str = Field(min_length=1)
    #: the model as the engine serves it (and the registry records)
    model: str = Field(min_length=1)
    #: a task name, or ``{name: ..., <that task's own options>}``
    task: str | dict[str, Any]
    optimizer: str = "ecotune"
    budget_tokens: int = Field(gt=0)
    r_min: int = Field(ge=1)
    r_max: int = Field(ge=1)
    eta0: float = Field(0.1, gt=0)
    lam: float = Field(0.1, ge=0, alias="lambda")
    seed: int = 0
    max_trials: int | None = Field(None, ge=1)
    max_failed_trials: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    start_from_default: bool = True
    search_space: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    #: start from an earlier study, ``{journal: previous | <uri>, top_k, observations}``
    #: (checked by the library's WarmStartConfig; ``previous`` is the study's last run)
    warm_start: dict[str, Any] | None = None
    #: a cost prior (prompt tokens per instance) instead of counting one
    prompt_tokens_hint: float | None = Field(None, gt=0)


class GpuEvaluator(_Open):
    """vLLM on GPU nodes, started by the pipeline; the Kubernetes keys pass through to
    PipelineOptions.

    ``engine``: ``perRun`` (default) starts one vLLM Deployment + Service for the whole run
    (:mod:`ecotune.run_engine`: a step creates it, the exit handler deletes it) and every
    trial's CPU evaluator calls it; ``perTrial`` starts vLLM inside each GPU evaluator pod
    (a cold start per trial, no Kubernetes API access needed).
    """

    image: str | None = None
    gpu_count: int = Field(1, ge=1)
    vllm_args: list[str] = Field(default_factory=list)
    engine: Literal["perRun", "perTrial"] = "perRun"
    #: seconds the run engine may take to load the model and become ready
    startup_timeout_s: float = Field(1800.0, gt=0)


class ChartEngine(_Closed):
    """Where trials run: an existing OpenAI-compatible service (``base_url``), or vLLM
    started by the pipeline on GPU nodes (``gpu_evaluator``, no ``base_url``): once per run
    or in each evaluator pod (``gpu_evaluator.engine``)."""

    type: Literal["service", "gpuEvaluator"] = "service"
    base_url: str = ""
    served_model_name: str | None = None
    #: the production endpoint a registered winner calls when vLLM ran inside the pipeline
    serving_url: str = ""
    api_key_secret: SecretRef | None = None
    gpu_evaluator: GpuEvaluator | None = None
    max_concurrency: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0)
    send_seed: bool | None = None
    use_chat: bool | None = None
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _service_has_url(self) -> ChartEngine:
        if self.type == "service" and not self.base_url:
            raise ValueError("engine.type service needs engine.base_url")
        return self


class Schedule(_Closed):
    cron: str | None = None
    time_zone: str | None = None


class S3Secret(_Closed):
    name: str | None = None
    access_key_id_key: str | None = None
    secret_access_key_key: str | None = None


class Storage(_Closed):
    """S3 for the journal and subsets; without it, paths in the pod (single-pod runs)."""

    enabled: bool = False
    journal_uri: str | None = None
    artifacts_uri: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    credentials_secret: S3Secret | None = None

    @model_validator(mode="after")
    def _enabled_has_journal(self) -> Storage:
        if self.enabled and not self.journal_uri:
            raise ValueError("storage.enabled needs storage.journal_uri")
        return self


class MlflowSecret(_Closed):
    name: str | None = None
    username_key: str | None = None
    password_key: str | None = None


class Tracking(_Closed):
    """MLflow tracking and the registry promotion of the finalize step."""

    enabled: bool = False
    tracking_uri: str | None = None
    experiment: str | None = None
    registered_model: str | None = None
    promote_alias: str | None = None
    held_out: int | None = Field(None, ge=1)
    credentials_secret: MlflowSecret | None = None


class Kfp(_Open):
    """Where and how runs are submitted; pod settings pass through to PipelineOptions."""

    host: str | None = None
    namespace: str | None = None
    experiment: str | None = None
    pipeline_package: str | None = None
    pipeline_root: str | None = None
    service_account: str | None = None
    run_name_prefix: str | None = None


class ChartConfig(_Closed):
    """The whole study config the chart renders (see the module docstring)."""

    version: Literal[1]
    study: ChartStudy
    engine: ChartEngine
    schedule: Schedule = Field(default_factory=Schedule)
    storage: Storage = Field(default_factory=Storage)
    tracking: Tracking = Field(default_factory=Tracking)
    kfp: Kfp = Field(default_factory=Kfp)

    @model_validator(mode="after")
    def _study_is_a_study(self) -> ChartConfig:
        self.study_config("")  # the library's own rules (task, space, fixed, r_min <= r_max)
        return self

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def of(cls, data: ChartConfig | dict[str, Any], source: str = "study config") -> ChartConfig:
        """Validate a dict (or pass a model through); :class:`ChartConfigError` naming
        every wrong field."""
        if isinstance(data, ChartConfig):
            return data
        if not isinstance(data, dict):
            raise ChartConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        if data.get("version") != 1:
            raise ChartConfigError(f"{source}: not a version 1 EcoTune study config")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ChartConfigError(f"{source}: {_pretty(e)}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChartConfig:
        """Read and validate a study config file."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ChartConfigError(f"cannot read study config {path}: {e}") from e
        return cls.of(data, str(path))

    def dump(self) -> dict[str, Any]:
        """JSON-safe dict without nulls (a KFP parameter cannot hold them); :meth:`of` reads
        it back."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    # -- what the pipeline derives from it -------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model name requests carry (the served name when it differs)."""
        return self.engine.served_model_name or self.study.model

    def engine_spec(self, base_url: str) -> dict[str, Any]:
        """The :class:`~ecotune.engines.EngineConfig` dict for the engine at ``base_url``
        (``fake://`` gives a FakeEngine). The API key, when the study has one, arrives as
        ``ECOTUNE_API_KEY`` from a Secret."""
        spec: dict[str, Any] = {"base_url": base_url, "model": self.model_name}
        for k in ("max_concurrency", "timeout_s", "max_retries", "send_seed", "use_chat",
                  "tokenizer"):
            if getattr(self.engine, k) is not None:
                spec[k] = getattr(self.engine, k)
        return spec

    def study_config(self, journal_uri: str) -> Any:
        """The library's :class:`~ecotune.config.StudyConfig` for this study, its journal
        at ``journal_uri`` (one per pipeline run).

        Raises:
            ValueError: the study block breaks a rule of the library's config.
        """
        s = self.study
        data = s.model_dump(by_alias=True, exclude={"model", "prompt_tokens_hint"},
                            exclude_none=True)
        if s.optimizer != "ecotune":
            # EcoTune's own settings: the chart's defaults apply to every study, whatever
            # its optimizer, and another optimizer refuses them
            for k in (*ECOTUNE_ONLY, "warm_start"):
                data.pop(k, None)
        data["engine"] = self.engine_spec(self.engine.base_url)
        if journal_uri:
            data["journal"] = journal_uri
        try:
            return validate_study_config(data, "study")
        except StudyConfigError as e:
            raise ValueError(str(e).replace("study: invalid study config: ", "study: ")) from None


def _pretty(e: ValidationError) -> str:
    """Every error on one line, each with its dotted field path."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
