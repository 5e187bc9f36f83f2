"""The ``sample_dataset`` component of the EcoTune pipeline; see ``component.py``."""

from components.sample_dataset.component import sample_dataset

__all__ = ["sample_dataset"]
