"""update_surrogate through ``python_func`` on a sampled local study with a FakeEngine."""

from components.sample_dataset import sample_dataset
from components.testing import ask, study_config
from ecotune.journal import open_journal


def test_updater_asks_a_batch_and_reissues_untold_trials(prepared):
    cfg, journal, manifest = prepared
    items = ask(cfg, journal, manifest, 3)
    # each loop item carries what the evaluator needs besides the pipeline parameters
    assert items == [{"trial_id": i, "journal_uri": journal, "manifest_uri": manifest,
                      "engine_url": ""} for i in (0, 1, 2)]
    # the engine URL the updater was given travels in the item (the run engine's)
    assert {i["engine_url"] for i in ask(cfg, journal, manifest, 3, "fake://")} == {"fake://"}
    # a retried updater (or the next round after a lost evaluator) hands them out again
    assert [i["trial_id"] for i in ask(cfg, journal, manifest, 3)] == [0, 1, 2]


def asked(tmp_path, cfg, engine_url):
    """(config, fidelity, token_limit) of the first batch of an EcoTune study."""
    out = sample_dataset.python_func(study=cfg, subsets_uri=str(tmp_path / "s"),
                                     journal_uri=str(tmp_path / "j"), run_key="",
                                     engine_url=engine_url)
    ask(cfg, out.journal_uri, out.manifest_uri, 3, engine_url=engine_url)
    return [(r["trial"]["config"], r["trial"]["fidelity"], r["trial"]["token_limit"])
            for r in open_journal(out.journal_uri).records() if r["type"] == "ask"]


def test_a_keyed_engine_gets_the_token_limits_of_an_unkeyed_one_through_engine_url(tmp_path):
    """Exact prompt tokens are counted on the step's ``engine_url``, so a study whose
    service needs an API key asks the trials, token limits included, that the same study
    asks of an unkeyed service; without the URL it falls back to the default prior."""
    keyed = study_config(optimizer="ecotune")
    keyed["engine"]["api_key_secret"] = {"name": "engine-key", "key": "key"}
    plain = asked(tmp_path / "plain", study_config(optimizer="ecotune"), "")
    assert asked(tmp_path / "keyed-url", keyed, "fake://") == plain
    assert asked(tmp_path / "keyed-no-url", keyed, "") != plain
