"""Bad input through the CLI: a clear one-line error, a non-zero exit, nothing lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import cli, dead_url, sha, write_config

from ecotune.testing.faults import FaultServer


@pytest.fixture(scope="module")
def existing(tmp_path_factory) -> tuple[Path, Path, str]:
    """A finished study whose journal every bad command must leave alone."""
    tmp = tmp_path_factory.mktemp("bad")
    cfg = write_config(tmp, fname="keep", max_trials=3)
    r = cli("tune", "--config", str(cfg), "--plain")
    assert r.returncode == 0, r.stderr
    journal = tmp / "runs" / "rel" / "journal.jsonl"
    return tmp, journal, sha(journal)  # type: ignore[return-value]


def _check(r, rc: int, needle: str, existing, counts, new_journal: Path | None = None) -> None:
    counts["bad_inputs_tried"] += 1
    err = r.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert r.returncode == rc, (r.returncode, r.stdout, err)
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert needle.lower() in lines[-1].lower(), lines[-1]
    _, journal, digest = existing
    assert sha(journal) == digest, "the existing journal changed"
    if new_journal is not None:
        assert not new_journal.exists() or new_journal.stat().st_size == 0


def _bad(tmp: Path, **kw) -> tuple[Path, Path]:
    cfg = write_config(tmp, fname="bad", **{"name": "bad", **kw})
    return cfg, tmp / "runs" / "bad" / "journal.jsonl"


CONFIG_ERRORS = [
    ({"r_min": 9, "r_max": 8}, "r_min (9) must be <= r_max (8)"),
    ({"optimizer": "nope"}, "unknown optimizer 'nope'"),
    ({"task": {"name": "chess"}}, "unknown task 'chess'"),
    ({"budget_tokens": 3}, "below the worst case of a single instance"),
    ({"budget_tokens": -5}, "budget_tokens"),
    ({"search_space": {"temperature": {"type": "float", "low": 1.0, "high": 0.0}}},
     "search_space"),
    ({"search_space": {"warp_drive": {"type": "float", "low": 0.0, "high": 1.0}}},
     "unknown parameter"),
    ({"search_space": {"temperature": {"type": "dice"}}}, "search_space"),
    ({"fixed": {"colour": 3}}, "unknown setting"),
    ({"bogus_key": 1}, "bogus_key"),
]


@pytest.mark.parametrize("change, needle", CONFIG_ERRORS)
def test_bad_study_config(existing, change: dict, needle: str, counts) -> None:
    tmp = existing[0]
    cfg, new = _bad(tmp, **change)
    _check(cli("tune", "--config", str(cfg), "--plain"), 2, needle, existing, counts, new)


def test_bad_config_on_resume_of_existing_study(existing, counts) -> None:
    tmp, journal, _ = existing
    cfg = write_config(tmp, fname="keep-bad", r_min=9, r_max=8)
    _check(cli("resume", "--config", str(cfg), "--plain"), 2, "r_min", existing, counts)


def test_unparsable_yaml_and_missing_file(existing, counts) -> None:
    tmp = existing[0]
    p = tmp / "broken.yaml"
    p.write_text("name: [unclosed\n  task: {")
    r = cli("tune", "--config", str(p))
    counts["bad_inputs_tried"] += 1
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    _check(cli("tune", "--config", str(tmp / "nope.yaml")), 2, "nope.yaml", existing, counts)
    _check(cli("resume", "--config", str(write_config(tmp, fname="never", name="never"))),
           2, "nothing to resume", existing, counts)


@pytest.mark.parametrize("content, needle", [
    ("", "jsonl"),
    ('{"q": "1+1", "a": "2"}\n{"q": "2+2", "a": \n', "jsonl"),
    ('{"question": "no q field", "a": "2"}\n' * 30, "q"),
    ("not json at all\n", "jsonl"),
])
def test_bad_jsonl_dataset(existing, tmp_path: Path, content: str, needle: str, counts) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    cfg, new = _bad(existing[0], task={"name": "jsonl", "data_path": str(data),
                                       "prompt_template": "Q: {q}\nA:", "reference_field": "a"},
                    r_min=1, r_max=2, fixed={"max_tokens": 3})
    _check(cli("tune", "--config", str(cfg), "--plain"), 2, needle, existing, counts, new)


def test_endpoint_unreachable(existing, counts) -> None:
    cfg, new = _bad(existing[0], engine={"base_url": dead_url(), "model": "m"})
    _check(cli("tune", "--config", str(cfg), "--plain"), 1, "unreachable", existing, counts, new)


def test_endpoint_serves_another_model(existing, counts) -> None:
    with FaultServer(models=["someone-elses-model"]) as srv:
        cfg, new = _bad(existing[0], engine={"base_url": srv.url, "model": "fault-model"})
        _check(cli("tune", "--config", str(cfg), "--plain"), 1, "not served", existing, counts,
               new)


def test_api_key_env_missing(existing, counts) -> None:
    with FaultServer() as srv:
        cfg, new = _bad(existing[0], engine={"base_url": srv.url, "model": "fault-model",
                                             "api_key_env": "ECOTUNE_REL_NO_SUCH_KEY"})
        env = {k: v for k, v in os.environ.items() if k != "ECOTUNE_REL_NO_SUCH_KEY"}
        _check(cli("tune", "--config", str(cfg), "--plain", env=env), 1,
               "ECOTUNE_REL_NO_SUCH_KEY", existing, counts, new)


def test_s3_workdir_without_credentials(existing, tmp_path: Path, counts) -> None:
    cfg, _ = _bad(existing[0], workdir="s3://some-bucket/studies")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    _check(cli("tune", "--config", str(cfg), "--plain", env=env), 1, "credentials", existing,
           counts)
