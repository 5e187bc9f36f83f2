"""Benchmarks as tasks: instances, prompts and scorers (see :class:`Task`)."""

from ecotune.tasks.base import Instance, Task, TaskDataError
from ecotune.tasks.registry import TASKS, TaskConfig, make_task

__all__ = ["TASKS", "Instance", "Task", "TaskConfig", "TaskDataError", "make_task"]
