"""Container images (images/*/Dockerfile): policy read from the Dockerfiles themselves, and
scripts/check_images.sh (hadolint + requirement resolution against PyPI).

No Docker engine is needed. hadolint comes from ``scripts/install_tools.sh``; without it the
script tests fail and say so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
SCRIPT = ROOT / "scripts" / "check_images.sh"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL",
                         re.I)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str:
    local = ROOT / ".tools" / "bin" / "hadolint"
    if local.exists():
        return str(local)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: run scripts/install_tools.sh (installs it into .tools/bin)")
    return found


def test_both_images_exist() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"control-plane", "evaluator"}
    assert (ROOT / ".dockerignore").exists()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_pinned_never_latest(dockerfile: Path) -> None:
    stages: set[str] = set()
    froms = [rest.split() for word, rest in instructions(dockerfile) if word == "FROM"]
    assert froms
    for parts in froms:
        image = parts[0]
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
        if image in stages:
            continue
        assert "latest" not in image
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d+\.\d+", tag), f"{image} is not pinned to a version tag"


def test_expected_bases() -> None:
    cp = [r for w, r in instructions(IMAGES / "control-plane" / "Dockerfile") if w == "FROM"]
    assert all(re.match(r"python:3\.11\.\d+-slim", f) for f in cp)
    ev = [r for w, r in instructions(IMAGES / "evaluator" / "Dockerfile") if w == "FROM"]
    assert len(ev) == 1 and re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", ev[0]), ev


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_runs_as_non_root(dockerfile: Path) -> None:
    users = [rest.split(":")[0] for word, rest in instructions(dockerfile) if word == "USER"]
    assert users, "no USER instruction"
    assert users[-1] not in ("root", "0")
    assert users[-1].isdigit(), "numeric UID so runAsNonRoot can verify it"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_no_secret_looking_env_or_arg(dockerfile: Path) -> None:
    for word, rest in instructions(dockerfile):
        if word in ("ENV", "ARG"):
            for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", rest):
                assert not SECRET_NAME.search(name), f"{word} {name} in {dockerfile}"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|\.aws|\.kube|\.pem|credentials", rest), rest


@pytest.mark.parametrize("req", sorted(IMAGES.glob("*/requirements.txt")), ids=lambda p: p.parent.name)
def test_requirements_fully_pinned(req: Path) -> None:
    lines = [line.split("#")[0].strip() for line in req.read_text().splitlines()]
    pins = [line for line in lines if line]
    assert pins
    for line in pins:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[0-9][A-Za-z0-9.+\-]*", line), line
    if req.parent.name == "evaluator":
        names = {p.split("==")[0].lower() for p in pins}
        assert not names & {"vllm", "torch", "numpy", "pydantic"}, "base image owns these"


def test_torch_pin_matches_dockerfile() -> None:
    req = (IMAGES / "control-plane" / "requirements.txt").read_text()
    pin = re.search(r"^torch==(\S+)", req, re.M).group(1)
    df = (IMAGES / "control-plane" / "Dockerfile").read_text()
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(pin)}$", df, re.M)
    assert "download.pytorch.org/whl/cpu" in df


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean_at_every_level(dockerfile: Path) -> None:
    res = subprocess.run([_hadolint(), "--no-color", str(dockerfile)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_check_images_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    _hadolint()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Dockerfile").write_text(
        "FROM python:latest\nENV OPENAI_API_KEY=sk-123\nRUN echo hi\n")
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "IMAGES_DIR": str(tmp_path), "SKIP_RESOLVE": "1"})
    assert res.returncode != 0
    for msg in ("not pinned", "looks like a secret", "non-root USER"):
        assert msg in res.stdout


def test_check_images_script_passes() -> None:
    """hadolint + policy + pip resolution of both images' requirements (PyPI)."""
    _hadolint()
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "control-plane requirements resolve" in res.stdout
    assert "evaluator extra requirements resolve" in res.stdout


# -- what the images install ------------------------------------------------------------------
def _pins(path: Path) -> dict[str, str]:
    """``{normalized name: version}`` of a requirements/constraints file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version.strip()
    return out


def _requirement_names(specs: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", s, maxsplit=1)[0]).lower()
            for s in specs}


def _chart_optimizers() -> set[str]:
    import json

    schema = json.loads((ROOT / "helm" / "ecotune" / "values.schema.json").read_text())
    props = schema["properties"]
    return (set(props["studyDefaults"]["properties"]["optimizer"]["enum"])
            | set(props["studies"]["items"]["properties"]["optimizer"]["enum"]))


@pytest.mark.parametrize("req", sorted(IMAGES.glob("*/requirements.txt")), ids=lambda p: p.parent.name)
def test_image_pins_are_the_project_constraints(req: Path) -> None:
    """Images run the versions the test suite ran with (requirements/constraints.txt).
    torch is the exception: constraints.txt leaves it out, the CPU build is installed first
    (scripts/install.sh, the Dockerfile's TORCH_VERSION) and must be the same release."""
    constraints = _pins(ROOT / "requirements" / "constraints.txt")
    pins = _pins(req)
    if "torch" in pins:
        install = (ROOT / "scripts" / "install.sh").read_text()
        assert f'"torch=={pins.pop("torch")}"' in install
    for name, version in pins.items():
        assert constraints.get(name) == version, f"{req.parent.name}: {name}=={version}, " \
            f"constraints.txt has {constraints.get(name)}"


def test_control_plane_installs_with_the_constraints_file() -> None:
    steps = instructions(IMAGES / "control-plane" / "Dockerfile")
    assert ("COPY", "requirements/constraints.txt /tmp/constraints.txt") in steps
    runs = [rest for word, rest in steps if word == "RUN" and "-r /tmp/requirements.txt" in rest]
    assert runs and all("-c /tmp/constraints.txt" in r for r in runs)


def test_images_hold_what_every_chart_optimizer_needs() -> None:
    """ecotune is installed with --no-deps: each image must list its dependencies itself,
    and Syne Tune (the bench extra) wherever a chart study may choose bohb or asha: the
    control plane asks, and the evaluator rebuilds the optimizer to tell its result."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    cp = set(_pins(IMAGES / "control-plane" / "requirements.txt"))
    ev = set(_pins(IMAGES / "evaluator" / "requirements.txt"))
    base_owned = {"numpy", "torch", "pydantic", "pyyaml", "httpx", "openai", "vllm"}
    core = _requirement_names(project["dependencies"])
    assert core <= cp, f"control-plane lacks {sorted(core - cp)}"
    assert core - base_owned <= ev, f"evaluator lacks {sorted(core - base_owned - ev)}"
    for extra in ("engine", "s3", "tracking", "kfp", "humaneval"):
        assert _requirement_names(extras[extra]) <= cp, extra
    if _chart_optimizers() & {"bohb", "asha"}:
        bench = _requirement_names(extras["bench"])
        assert bench <= cp and bench <= ev, "the chart offers bohb/asha: images need Syne Tune"
