"""The task registry: every task's name and class, and building a task from its config.

A task config (the ``task:`` section of a study config) is a bare name or a mapping with
``name`` and that task's own options, e.g. ``{name: mmlu, subjects: [anatomy]}``. Each task
class declares its options model (``Task.Options``, a
:class:`~ecotune.tasks.base.TaskOptions`); :data:`TaskConfig` is the union of them,
discriminated on ``name``, so a config is checked against exactly the options its task
takes and an unknown name, an unknown option or a bad value is a :class:`TaskConfigError`
that says which.

Example:
    >>> make_task({"name": "arithmetic", "n": 50}).instances()[0].id
    'arith-0-0'
    >>> make_task({"name": "arithmetic", "subjects": ["anatomy"]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ecotune.tasks.registry.TaskConfigError: unknown option 'subjects' for task ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from ecotune.tasks.arithmetic import Arithmetic, ArithmeticOptions
from ecotune.tasks.base import Task, TaskOptions
from ecotune.tasks.gsm8k import GSM8K, GSM8KOptions
from ecotune.tasks.gsm8k_calc import GSM8KCalc, GSM8KCalcOptions
from ecotune.tasks.humaneval import HumanEval, HumanEvalOptions
from ecotune.tasks.jsonl import JsonlOptions, JsonlTask
from ecotune.tasks.multiple_choice import (
    ARC,
    MMLU,
    ARCOptions,
    MedQA,
    MedQAOptions,
    MMLUOptions,
    OpenBookQA,
    OpenBookQAOptions,
)

#: registry name -> task class (its ``Options`` take that name)
TASKS: dict[str, type[Task]] = {
    "mmlu": MMLU,
    "arc_easy": ARC,
    "arc_challenge": ARC,
    "openbookqa": OpenBookQA,
    "medqa": MedQA,
    "gsm8k": GSM8K,
    "gsm8k_calc": GSM8KCalc,
    "humaneval": HumanEval,
    "jsonl": JsonlTask,
    "arithmetic": Arithmetic,
}

#: a validated task config: the options model of the task ``name`` names
TaskConfig = Annotated[
    MMLUOptions | ARCOptions | OpenBookQAOptions | MedQAOptions | GSM8KOptions
    | GSM8KCalcOptions | HumanEvalOptions | JsonlOptions | ArithmeticOptions,
    Field(discriminator="name"),
]
_ADAPTER: TypeAdapter[TaskOptions] = TypeAdapter(TaskConfig)

#: the options every task config carried before tasks had their own, at their defaults
#: (the study config a journal of that time recorded holds all of them)
_FLAT_DEFAULTS: dict[str, Any] = {
    "data_path": None, "subjects": None, "split": "test", "limit": None, "seed": 0, "n": 200,
    "prompt_template": None, "reference_field": None, "scorer": "exact",
    "few_shot_path": None, "few_shot": 0, "id_field": None, "stratum_field": None,
    "max_tokens": 32, "stop": None, "task_name": None, "timeout_s": 3.0,
}


class TaskConfigError(ValueError):
    """A task config names no known task, or gives options its task does not take."""


def task_config(spec: TaskOptions | Mapping[str, Any] | str) -> TaskOptions:
    """Validate a task config (a bare name, a mapping, or options already validated).

    Raises:
        TaskConfigError: unknown task, unknown option, missing or bad value; the message
            names the task and the option.
    """
    if isinstance(spec, TaskOptions):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise TaskConfigError("a task is a name or a mapping with 'name' and its options, "
                              f"got {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str) or name not in TASKS:
        what = f"unknown task {name!r}" if name is not None else "no task 'name'"
        raise TaskConfigError(f"{what}; known tasks: {', '.join(sorted(TASKS))}")
    try:
        return _ADAPTER.validate_python(dict(spec))
    except ValidationError as e:
        raise TaskConfigError(_explain(e, name)) from None


def _explain(e: ValidationError, name: str) -> str:
    """One line per problem, each naming the option (the union's tag left out)."""
    options = sorted(k for k in TASKS[name].Options.model_fields if k != "name")
    parts = []
    for err in e.errors():
        option = ".".join(str(x) for x in err["loc"][1:])  # loc[0] is the tag: the name
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {option!r} for task {name!r}; "
                         f"its options: {', '.join(options)}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"option {option!r} of task {name!r}: {msg}")
    return "; ".join(parts)


def make_task(spec: TaskOptions | Mapping[str, Any] | str) -> Task:
    """Build the task a config names (see :func:`task_config` for what it accepts)."""
    options = task_config(spec)
    return TASKS[options.name].from_options(options)


def upgrade_flat_task_config(spec: Any) -> Any:
    """A task config as journals recorded it before per-task options, made valid again.

    Such a config holds every task's options; the ones its task does not take are dropped
    when they hold their old default (they never had an effect). Anything else is left for
    :func:`task_config` to judge.
    """
    if not isinstance(spec, Mapping) or spec.get("name") not in TASKS:
        return spec
    takes = TASKS[spec["name"]].Options.model_fields
    return {k: v for k, v in spec.items()
            if k in takes or k not in _FLAT_DEFAULTS or v != _FLAT_DEFAULTS[k]}
