"""The real `sidecars` command: configuration validation and exit codes."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import free_port


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecars", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_config_prints_effective_settings_with_secrets_masked() -> None:
    result = run(
        ["config", "breaker"],
        {
            "BREAKER_UPSTREAM": "http://orders:8080",
            "BREAKER_FAILURE_RATIO": "0.5",
            "SIDECAR_ADMIN_TOKEN": "very-secret",
        },
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["routes"][0]["upstream"] == "http://orders:8080"
    assert settings["routes"][0]["breaker"]["failure_ratio"] == 0.5
    assert settings["common"]["admin_token"] == "***"
    assert "very-secret" not in result.stdout


@pytest.mark.parametrize("command", ["breaker", "ambassador"])
def test_bad_configuration_exits_2_with_one_line_per_problem(command: str) -> None:
    prefix = command.upper()
    env = {
        f"{prefix}_UPSTREAM": "http://svc:80",
        f"{prefix}_TIMEOUT": "forever",
        f"{prefix}_MAX_ATTEMPTS": "0",
        f"{prefix}_LISTEN": "nowhere",
    }
    for args in ([command], ["config", command]):
        result = run(args, env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 3, result.stderr
        assert all(line.startswith(f"sidecars {command}: config error: ") for line in lines)
        assert "Traceback" not in result.stderr
        assert f"{prefix}_TIMEOUT='forever'" in result.stderr
        assert f"{prefix}_MAX_ATTEMPTS='0'" in result.stderr
        assert f"{prefix}_LISTEN='nowhere'" in result.stderr


def test_log_adapter_config_errors() -> None:
    result = run(["log-adapter"], {"LOGADAPTER_INPUTS": "carrier-pigeon"})
    assert result.returncode == 2
    assert "LOGADAPTER_INPUTS='carrier-pigeon'" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run(["teleport"], {})
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_version_is_the_installed_distribution_s() -> None:
    result = run(["--version"], {})
    assert result.returncode == 0
    pyproject = Path(__file__).parents[3] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert result.stdout.startswith(f"sidecars {version} (log processing: ")


def test_health_reports_failure_when_nothing_listens() -> None:
    port = free_port()
    result = run(
        ["health", "breaker"],
        {"BREAKER_UPSTREAM": "http://svc:80", "BREAKER_ADMIN_LISTEN": f"127.0.0.1:{port}"},
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}/healthz" in result.stderr
