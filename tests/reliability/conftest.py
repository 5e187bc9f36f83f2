"""Shared helpers of the reliability suite and its counts summary.

Tests increment :data:`COUNTS` (through the ``counts`` fixture); at the end of the session
a ``reliability:`` line is printed (``pytest_terminal_summary``) and the counts are written
to ``<pytest basetemp>/reliability_counts.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecotune.ledger import journal_charged
from ecotune.process import free_port

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

#: what the summary line reports; tests add to these
COUNTS: Counter[str] = Counter({"kills_survived": 0, "faults_injected": 0,
                                "bad_inputs_tried": 0, "sandbox_escapes_stopped": 0,
                                "secrets_checked": 0, "records_lost": 0,
                                "billed_not_charged": 0})
_START = time.monotonic()

# the session-scoped server fixtures (s3_server, mlflow_server, vllm_server) come from
# tests/conftest.py, shared with tests/integration: one server of each per session.


@pytest.fixture
def counts() -> Counter[str]:
    return COUNTS


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not any(str(a).rstrip("/").endswith("reliability") or "tests/reliability" in str(a)
               for a in config.args) and COUNTS.total() == 0:
        return
    c = dict(COUNTS)
    c["duration_s"] = round(time.monotonic() - _START, 1)
    line = ("reliability: kills survived={kills_survived}, faults injected={faults_injected}, "
            "bad inputs tried={bad_inputs_tried}, sandbox escapes stopped="
            "{sandbox_escapes_stopped}, secrets checked={secrets_checked}, "
            "records lost={records_lost}, tokens billed by the engine but not charged="
            "{billed_not_charged} ({duration_s} s)").format(**c)
    terminalreporter.write_sep("=", "reliability counts")
    terminalreporter.write_line(line)
    try:
        base = config._tmp_path_factory.getbasetemp()
        out = Path(base) / "reliability_counts.json"
        out.write_text(json.dumps(c, indent=1, sort_keys=True))
        terminalreporter.write_line(f"counts written to {out}")
    except Exception as e:  # noqa: BLE001 - the summary must never fail the run
        terminalreporter.write_line(f"(could not write counts JSON: {e})")


# ---------------------------------------------------------------------------- helpers
def dead_url() -> str:
    """An http URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def write_config(tmp: Path, fname: str = "study", **kw: Any) -> Path:
    d: dict[str, Any] = {
        "name": "rel", "task": {"name": "arithmetic", "n": 60},
        "engine": {"base_url": "fake://", "model": "fake"},
        "search_space": {"temperature": {"type": "float", "low": 0.0, "high": 1.0},
                         "top_p": {"type": "float", "low": 0.5, "high": 1.0}},
        "fixed": {"max_tokens": 3, "few_shot": 1},
        "budget_tokens": 1500, "r_min": 2, "r_max": 8, "optimizer": "random",
        "workdir": str(tmp / "runs"),
    }
    d.update(kw)
    p = tmp / f"{fname}.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``ecotune ARGV`` in a subprocess."""
    return subprocess.run([PY, "-m", "ecotune.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ), cwd=cwd or ROOT)


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def raw_records(path: Path) -> list[dict[str, Any]]:
    """Every intact line of a local journal, duplicates included."""
    out = []
    for line in path.read_bytes().splitlines(keepends=True):
        if line.endswith(b"\n"):
            out.append(json.loads(line))
    return out


def check_bill(journal_tokens: int, billed: int, budget: int) -> None:
    """The budget rules against the engine's true bill: it stays within the budget, and the
    journal charged at least as much (counts any token billed but not charged)."""
    COUNTS["billed_not_charged"] += max(0, billed - journal_tokens)
    assert billed <= budget, f"the engine billed {billed} > budget {budget}"
    assert journal_tokens >= billed, f"journal charged {journal_tokens} < billed {billed}"


def check_journal(records: list[dict[str, Any]], budget: int, *, raw: list[dict] | None = None,
                  require_complete: bool = True) -> dict[str, Any]:
    """The journal invariants: every ask told exactly once, no key twice, usage of tells ==
    usage of instance records, everything charged <= budget. Returns totals (``tokens``:
    everything the journal charged, kept worst cases included); counts lost records."""
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "duplicate keys after dedup"
    asks = {int(r["trial"]["id"]) for r in records if r["type"] == "ask"}
    tells = {int(r["trial_id"]): r for r in records if r["type"] == "tell"}
    lost = asks - set(tells) if require_complete else set()
    COUNTS["records_lost"] += len(lost)
    assert not lost, f"asked but never told: {sorted(lost)}"
    assert set(tells) <= asks, f"told but never asked: {sorted(set(tells) - asks)}"
    if raw is not None:  # no tell / ask written twice, even before dedup
        raw_keys = Counter(r["key"] for r in raw if r["type"] in ("ask", "tell"))
        twice = [k for k, n in raw_keys.items() if n > 1]
        assert not twice, f"written twice: {twice}"
    inst: dict[int, int] = Counter()
    for r in records:
        if r["type"] == "instance":
            inst[int(r["trial_id"])] += int(r["prompt_tokens"]) + int(r["completion_tokens"])
    for tid, t in tells.items():
        res = t["result"]
        tok = int(res["prompt_tokens"]) + int(res["completion_tokens"])
        assert tok == inst.get(tid, 0), f"trial {tid}: tell {tok} != instances {inst.get(tid, 0)}"
    told_inst = sum(v for k, v in inst.items() if k in tells)
    usage = sum(int(t["result"]["prompt_tokens"]) + int(t["result"]["completion_tokens"])
                for t in tells.values())
    assert usage == told_inst
    total = journal_charged(records)
    assert total <= budget, f"charged {total} > budget {budget}"
    return {"asks": len(asks), "tells": len(tells), "tokens": total, "usage": usage,
            "all_instance_tokens": sum(inst.values()),
            "failed": sum(1 for t in tells.values() if t["result"]["status"] == "failed")}
