"""The ``finalize_study`` component of the EcoTune pipeline; see ``component.py``."""

from components.finalize_study.component import finalize_study

__all__ = ["finalize_study"]
