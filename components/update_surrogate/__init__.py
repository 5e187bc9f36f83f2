"""The ``update_surrogate`` component of the EcoTune pipeline; see ``component.py``."""

from components.update_surrogate.component import update_surrogate

__all__ = ["update_surrogate"]
