"""The ``control_budget`` component of the EcoTune pipeline; see ``component.py``."""

from components.control_budget.component import control_budget

__all__ = ["control_budget"]
