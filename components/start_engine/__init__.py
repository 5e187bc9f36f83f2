"""The ``start_engine`` component of the EcoTune pipeline; see ``component.py``."""

from components.start_engine.component import start_engine

__all__ = ["start_engine"]
