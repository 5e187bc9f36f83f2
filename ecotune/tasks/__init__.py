"""Benchmarks as tasks: instances, prompts and scorers (see :class:`Task`).

Each task declares its options (:class:`TaskOptions`); :func:`make_task` builds a task from
a config validated against them (see :mod:`ecotune.tasks.registry`).
"""

from ecotune.tasks.base import Instance, Task, TaskDataError, TaskOptions
from ecotune.tasks.registry import TASKS, TaskConfig, TaskConfigError, make_task, task_config

__all__ = ["TASKS", "Instance", "Task", "TaskConfig", "TaskConfigError", "TaskDataError",
           "TaskOptions", "make_task", "task_config"]
