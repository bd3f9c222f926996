"""`pip install .` must ship every package (the demo runs the installed modules, and
setuptools' explicit package list in pyproject.toml silently drops a new subpackage), and a
feature configured without its optional extra must say which extra."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from deploy_artifacts import REPO

Result = subprocess.CompletedProcess[bytes]


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "sidecars").rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    mapped = {name: REPO / path for name, path in config.get("package-dir", {}).items()}
    for name in listed - on_disk:
        root, *rest = name.split(".")
        assert (mapped[root].joinpath(*rest) / "__init__.py").exists(), name


def without(module: str, *args: str, env: dict[str, str], stdin: bytes = b"") -> Result:
    """The real `sidecars` command in a process where ``module`` cannot be imported (as
    when its optional extra was not installed)."""
    hide = f"import sys; sys.modules[{module!r}] = None; from sidecars.cli import main; "
    hide += "sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", hide, *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_shared_breaker_state_without_the_redis_extra_is_a_configuration_error() -> None:
    url = {"BREAKER_UPSTREAM": "http://127.0.0.1:9", "BREAKER_STATE_REDIS_URL": "redis://r:6379"}
    result = without("redis", "config", "breaker", env=url)
    assert result.returncode == 2, result.stderr
    assert b"BREAKER_STATE_REDIS_URL" in result.stderr
    assert b"pip install 'sidecars[redis]'" in result.stderr
    unset = {**url, "BREAKER_STATE_REDIS_URL": ""}
    assert without("redis", "config", "breaker", env=unset).returncode == 0


def test_ecs_metadata_without_the_ecs_extra_is_logged_and_the_adapter_runs_on() -> None:
    env = {
        "LOGADAPTER_INPUTS": "stdin",
        "LOGADAPTER_ADMIN_LISTEN": "127.0.0.1:0",
        "ECS_CONTAINER_METADATA_URI_V4": "http://127.0.0.1:9/v4",
    }
    result = without("aiohttp", "log-adapter", env=env, stdin=b"still logging\n")
    assert result.returncode == 0, result.stderr
    assert b"still logging" in result.stdout
    assert b"pip install 'sidecars[ecs]'" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "output", "extra"),
    [
        ("aiohttp", "http://127.0.0.1:9/logs", "http"),
        ("aiohttp", "otlp+http://127.0.0.1:9", "otlp"),
        ("opentelemetry", "otlp+http://127.0.0.1:9", "otlp"),
        ("botocore", "cloudwatch://app", "cloudwatch"),
    ],
)
def test_a_remote_output_without_its_extra_is_a_configuration_error(
    module: str, output: str, extra: str
) -> None:
    env = {"LOGADAPTER_OUTPUTS": output, "AWS_REGION": "eu-west-1"}
    result = without(module, "config", "log-adapter", env=env)
    assert result.returncode == 2, result.stderr
    assert b"LOGADAPTER_OUTPUTS" in result.stderr
    assert f"pip install 'sidecars[{extra}]'".encode() in result.stderr
