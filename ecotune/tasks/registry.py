"""Build a task from a declarative :class:`TaskConfig` (YAML/JSON friendly)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from ecotune.tasks import data
from ecotune.tasks.base import Task


class TaskConfig(BaseModel):
    """What to evaluate on.

    Attributes:
        name: Registry name (``mmlu``, ``arc_easy``, ``arc_challenge``, ``openbookqa``,
            ``medqa``, ``gsm8k``, ``humaneval``, ``jsonl``, ``arithmetic``).
        data_path: Local path, ``s3://`` URI or ``hf://`` dataset; default: the task's
            folder under ``$ECOTUNE_DATA_DIR`` (or ``../shared/data``).
        subjects: MMLU subjects to keep (default all 57).
        split: Split to evaluate (MMLU ``test``/``val``, GSM8K ``test``/``train``).
        limit: Keep only the first ``limit`` instances.
        seed: Seed of generated tasks (``arithmetic``).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    data_path: str | None = None
    subjects: list[str] | None = None
    split: str = "test"
    limit: int | None = Field(None, ge=1)
    seed: int = 0
    n: int = Field(200, ge=1, description="arithmetic: number of questions")
    # jsonl task
    prompt_template: str | None = None
    reference_field: str | None = None
    scorer: str = "exact"
    few_shot_path: str | None = None
    few_shot: int = Field(0, ge=0, description="jsonl: default few-shot count")
    id_field: str | None = None
    stratum_field: str | None = None
    max_tokens: int = Field(32, ge=1)
    stop: list[str] | None = None
    task_name: str | None = Field(None, description="jsonl: name used for ids and storage")
    timeout_s: float = Field(3.0, gt=0, description="humaneval: per-problem time limit")


def _dir(spec: TaskConfig, folder: str) -> str:
    return spec.data_path or data.join(data.default_data_dir(), folder)


def _mmlu(spec: TaskConfig) -> Task:
    from ecotune.tasks.multiple_choice import MMLU

    variant = None
    if spec.subjects or spec.split != "test":
        tag = ",".join(sorted(spec.subjects or [])) + f"|{spec.split}"
        variant = hashlib.sha256(tag.encode()).hexdigest()[:8]
    return MMLU(_dir(spec, "mmlu"), subjects=spec.subjects, split=spec.split,
                variant=variant, limit=spec.limit)


def _arc(level: str) -> Callable[[TaskConfig], Task]:
    def build(spec: TaskConfig) -> Task:
        from ecotune.tasks.multiple_choice import ARC

        path = spec.data_path or data.join(data.default_data_dir(), "arc", f"arc_{level}.jsonl")
        return ARC(path, variant=level, limit=spec.limit)

    return build


def _openbookqa(spec: TaskConfig) -> Task:
    from ecotune.tasks.multiple_choice import OpenBookQA

    path = spec.data_path or data.join(data.default_data_dir(), "openbookqa", "openbook_qa.jsonl")
    return OpenBookQA(path, limit=spec.limit)


def _medqa(spec: TaskConfig) -> Task:
    from ecotune.tasks.multiple_choice import MedQA

    path = spec.data_path or data.join(
        data.default_data_dir(), "medqa", "phrases_no_exclude_test.jsonl")
    return MedQA(path, limit=spec.limit)


def _gsm8k(spec: TaskConfig) -> Task:
    from ecotune.tasks.gsm8k import GSM8K

    return GSM8K(_dir(spec, "gsm8k"), split=spec.split, limit=spec.limit)


def _humaneval(spec: TaskConfig) -> Task:
    from ecotune.tasks.humaneval import HumanEval

    return HumanEval(spec.data_path, timeout_s=spec.timeout_s, limit=spec.limit)


def _arithmetic(spec: TaskConfig) -> Task:
    from ecotune.tasks.arithmetic import Arithmetic

    return Arithmetic(n=spec.n, seed=spec.seed, variant=None if spec.seed == 0 else f"s{spec.seed}",
                      limit=spec.limit)


def _jsonl(spec: TaskConfig) -> Task:
    from ecotune.tasks.jsonl import JsonlTask

    if not (spec.data_path and spec.prompt_template and spec.reference_field):
        raise ValueError("the jsonl task needs data_path, prompt_template and reference_field")
    return JsonlTask(
        spec.data_path, prompt_template=spec.prompt_template, reference_field=spec.reference_field,
        scorer=spec.scorer, few_shot_path=spec.few_shot_path, id_field=spec.id_field,
        stratum_field=spec.stratum_field, split=spec.split, default_few_shot=spec.few_shot,
        max_tokens=spec.max_tokens, stop=spec.stop, name=spec.task_name, limit=spec.limit,
    )


TASKS: dict[str, Callable[[TaskConfig], Task]] = {
    "mmlu": _mmlu,
    "arc_easy": _arc("easy"),
    "arc_challenge": _arc("challenge"),
    "openbookqa": _openbookqa,
    "medqa": _medqa,
    "gsm8k": _gsm8k,
    "humaneval": _humaneval,
    "jsonl": _jsonl,
    "arithmetic": _arithmetic,
}


def make_task(spec: TaskConfig | dict | str) -> Task:
    """Build the task a config names (a bare name or dict is accepted too)."""
    if isinstance(spec, str):
        spec = TaskConfig(name=spec)
    elif isinstance(spec, dict):
        spec = TaskConfig(**spec)
    build = TASKS.get(spec.name)
    if build is None:
        raise ValueError(f"unknown task {spec.name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return build(spec)
