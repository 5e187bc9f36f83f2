"""sample_dataset through ``python_func`` on a local store with a FakeEngine."""

import json

from components.sample_dataset import sample_dataset
from components.testing import study_config
from ecotune.journal import open_journal


def test_sampler_builds_subsets_and_journal_header_idempotently(tmp_path, prepared):
    cfg, journal, manifest = prepared
    assert journal == str(tmp_path / "journal" / "run-1")
    assert manifest.endswith("/subsets/arithmetic-0/0/manifest.json") or "/subsets/" in manifest
    assert json.loads(open(manifest).read())["r_max"] == 8
    again = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "store"),
                                       journal_uri=str(tmp_path / "journal"), run_key="run-1")
    assert tuple(again) == (manifest, journal)
    assert [r["type"] for r in open_journal(journal).records()] == ["study"]


def header_prior(tmp_path, cfg, engine_url):
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "s"),
                                     journal_uri=str(tmp_path / "j"), run_key="",
                                     engine_url=engine_url)
    return open_journal(out.journal_uri).records()[0]["prompt_tokens_hint"]


def test_a_keyed_engine_counts_the_cost_prior_on_the_steps_engine_url(tmp_path):
    """The API key is not in the study config: a keyed service is counted on the step's
    ``engine_url`` (with the key Secret mounted), as an unkeyed one is on its base_url."""
    keyed = study_config()
    keyed["engine"]["api_key_secret"] = {"name": "engine-key", "key": "key"}
    counted = header_prior(tmp_path / "plain", study_config(), "")
    assert counted != 200.0  # the cost model's default prior
    assert header_prior(tmp_path / "keyed-url", keyed, "fake://") == counted
    assert header_prior(tmp_path / "keyed-no-url", keyed, "") == 200.0
