"""Policy scan of the rendered chart: checkov (pinned in scripts/install_tools.sh, installed
by `make tools` into its own venv) on every scenario (default values, examples/*.yaml,
ci/*-values.yaml). No check may fail except those skipped, each with its reason, in
helm/ecotune/ci/checkov.yaml; a skip that no longer fails anywhere must go.

Needs the real helm and checkov; without them the tests fail and say so.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helm_render import CHART, CI, EXAMPLES, KUBE_VERSION, ROOT, TOOLS_BIN, helm

CONFIG = CI / "checkov.yaml"
INSTALL_TOOLS = ROOT / "scripts" / "install_tools.sh"


def pinned_checkov_version() -> str:
    m = re.search(r'^CHECKOV_VERSION="([^"]+)"', INSTALL_TOOLS.read_text(), re.M)
    assert m, f"no CHECKOV_VERSION in {INSTALL_TOOLS}"
    return m.group(1)


@functools.cache
def checkov_bin(tools_bin: Path = TOOLS_BIN) -> str:
    """The pinned checkov: .tools/bin/checkov, else PATH; fails the test (never skips)."""
    path = tools_bin / "checkov"
    found = str(path) if path.exists() and os.access(path, os.X_OK) else shutil.which("checkov")
    if not found:
        pytest.fail("checkov not found: `make tools` installs it "
                    "(scripts/install_tools.sh, into .tools/checkov-venv; .tools/bin/checkov)")
    res = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=120)
    version, pinned = res.stdout.strip(), pinned_checkov_version()
    if res.returncode != 0 or version != pinned:
        pytest.fail(f"{found} is checkov {version or res.stderr.strip()!r}, the chart's policy "
                    f"config is checked with {pinned}: `make tools` installs it")
    return found


def checkov_failures(directory: Path, config: Path | None = CONFIG) -> list[dict]:
    """Failed checks of ``checkov -d directory`` (``config``'s skips applied; None: no
    config, every check runs), as {check_id, check_name, file, resource}."""
    cmd = [checkov_bin(), "-d", str(directory), "--framework", "kubernetes",
           "--quiet", "--compact", "-o", "json", "--skip-download"]
    if config is not None:
        cmd += ["--config-file", str(config)]
    # cwd: the scanned dir, so no stray .checkov.yaml of the checkout is picked up
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=directory)
    assert res.returncode in (0, 1), f"checkov exited {res.returncode}:\n{res.stderr[-4000:]}"
    reports = json.loads(res.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    (report,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert report["summary"]["resource_count"] > 0, f"checkov scanned nothing in {directory}"
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return [{"check_id": f["check_id"], "check_name": f["check_name"],
             "file": Path(f["file_path"]).name, "resource": f["resource"]}
            for f in report["results"]["failed_checks"]]


def describe(failures: list[dict]) -> str:
    return "\n".join(sorted({f"{f['file']}: {f['check_id']} {f['check_name']} ({f['resource']})"
                             for f in failures}))


def scenarios() -> dict[str, list[Path]]:
    """Scenario name -> values files, as scripts/check_chart.sh names them."""
    out: dict[str, list[Path]] = {"default": []}
    for f in sorted([*EXAMPLES.glob("*.yaml"), *CI.glob("*-values.yaml")]):
        out[f"{f.parent.name}-{f.stem}"] = [f]
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every scenario rendered to <dir>/<scenario>.yaml."""
    checkov_bin()  # fail first on a missing checkov, before rendering anything
    out = tmp_path_factory.mktemp("rendered")
    for name, values in scenarios().items():
        args = ["template", "ecotune", str(CHART), "--namespace", "tuning",
                "--kube-version", KUBE_VERSION]
        for v in values:
            args += ["-f", str(v)]
        res = helm(*args)
        assert res.returncode == 0, f"{name}: {res.stderr}"
        (out / f"{name}.yaml").write_text(res.stdout)
    return out


def skipped_checks() -> dict[str, str]:
    """The config's skip-check entries -> the reason on their line."""
    skips = yaml.safe_load(CONFIG.read_text())["skip-check"]
    reasons = {}
    for line in CONFIG.read_text().splitlines():
        m = re.match(r"^\s*-\s*(CKV2?_K8S_\d+)\s*(?:#\s*(.*))?$", line)
        if m:
            reasons[m.group(1)] = (m.group(2) or "").strip()
    assert set(reasons) == set(skips), "every skip-check entry on its own '- ID  # reason' line"
    return reasons


# -- the scan ----------------------------------------------------------------------------------
def test_no_policy_check_fails_on_any_scenario(rendered: Path) -> None:
    assert len(list(rendered.glob("*.yaml"))) == len(scenarios()) >= 6
    failures = checkov_failures(rendered)
    assert not failures, (f"checkov checks failed (fix the templates, or skip the check in "
                          f"{CONFIG.relative_to(ROOT)} with its reason):\n{describe(failures)}")


def test_every_skip_has_a_reason() -> None:
    reasons = skipped_checks()
    assert reasons
    for check, reason in reasons.items():
        assert len(reason.split()) >= 4, f"{check}: no reason given in {CONFIG.name}"


def test_every_skip_is_still_needed(rendered: Path) -> None:
    """Without the config, each skipped check fails somewhere: a stale skip must go."""
    failing = {f["check_id"] for f in checkov_failures(rendered, config=None)}
    stale = set(skipped_checks()) - failing
    assert not stale, f"skipped in {CONFIG.name} but no longer failing: {sorted(stale)}"


# -- the scan can fail ---------------------------------------------------------------------------
BAD_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "bad", "namespace": "tuning"},
    "spec": {"containers": [{
        "name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
        "securityContext": {"privileged": True, "allowPrivilegeEscalation": True},
    }]},
}


def test_a_privileged_container_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(BAD_POD))
    failures = checkov_failures(tmp_path)
    ids = {f["check_id"] for f in failures}
    assert "CKV_K8S_16" in ids, describe(failures)  # Container should not be privileged
    assert "CKV_K8S_20" in ids, describe(failures)  # allowPrivilegeEscalation
    assert all(f["resource"] == "Pod.tuning.bad" for f in failures)


def test_a_missing_checkov_fails_and_says_how_to_install(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="make tools"):
        checkov_bin.__wrapped__(tmp_path)
