"""Fixtures of the components' own tests (``components/<name>/tests/``)."""

import pytest

from components.sample_dataset import sample_dataset
from components.testing import study_config


@pytest.fixture
def prepared(tmp_path):
    """A sampled study on a local store: (config, run journal URI, manifest URI)."""
    cfg = study_config()
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "store"),
                                     journal_uri=str(tmp_path / "journal"), run_key="run-1")
    return cfg, out.journal_uri, out.manifest_uri
