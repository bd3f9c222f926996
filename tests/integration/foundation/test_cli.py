"""The real `sidecars` command: configuration validation and exit codes."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
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


def test_health_exits_1_never_2_on_a_configuration_or_usage_error() -> None:
    """Docker's HEALTHCHECK reserves exit status 2."""
    config_error = run(["health", "breaker"], {"BREAKER_TIMEOUT": "forever"})
    assert config_error.returncode == 1
    assert "BREAKER_TIMEOUT='forever' is invalid" in config_error.stderr
    usage_error = run(["health", "teleport"], {})
    assert usage_error.returncode == 1
    assert "invalid choice" in usage_error.stderr


def test_a_misspelt_variable_gets_the_closest_known_name() -> None:
    result = run(
        ["breaker"], {"BREAKER_UPSTREAM": "http://svc:80", "BREAKER_FAILURE_TRESHOLD": "3"}
    )
    assert result.returncode == 2
    assert (
        "BREAKER_FAILURE_TRESHOLD is not a known setting: did you mean "
        "BREAKER_FAILURE_THRESHOLD?" in result.stderr
    )


README = Path(__file__).parents[3] / "README.md"
SIDECAR_COMMANDS = ("breaker", "ambassador", "log-adapter")


def help_variables(command: str) -> dict[str, str]:
    """Variable -> default, as ``sidecars <command> --help`` lists them."""
    result = run([command, "--help"], {})
    assert result.returncode == 0, result.stderr
    _, _, listing = result.stdout.partition("environment variables (default):\n")
    rows = [line.split(maxsplit=1) for line in listing.split("\n\n")[0].splitlines()]
    return {name: default for name, default in rows}


def readme_variables(command: str) -> dict[str, str]:
    """Variable -> default of ``command`` in README.md's configuration tables: the first code
    span of the default cell, else its first word (``required``, ``unset``); for the proxy
    table (``P_`` rows) the column of the command."""
    column = 2 if command == "ambassador" else 1
    prefix = {"breaker": "BREAKER_", "ambassador": "AMBASSADOR_"}.get(command, "LOGADAPTER_")
    found = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| `((?:P|SIDECAR|LOGADAPTER)_[A-Z0-9_]+)` \|(.*)", line)
        if match is None:
            continue
        name, cells = match.group(1), [cell.strip() for cell in match.group(2).split("|")]
        if name.startswith("P_"):
            if command == "log-adapter":
                continue
            name, cell = prefix + name[2:], cells[column - 1]
        elif name.startswith(("SIDECAR_", prefix)):
            cell = cells[0]
        else:
            continue
        default = re.match(r"`([^`]*)`|(\w+)", cell)
        assert default is not None, line
        found[name] = default.group(1) or default.group(2)
    return found


@pytest.mark.parametrize("command", SIDECAR_COMMANDS)
def test_help_lists_every_variable_with_the_default_the_readme_gives(command: str) -> None:
    listed = help_variables(command)
    assert listed[f"{command.upper().replace('-', '')}_ADMIN_LISTEN"].startswith("0.0.0.0:99")
    assert listed["SIDECAR_DRAIN_TIMEOUT"] == "20s"
    assert readme_variables(command) == listed



def test_the_demo_s_help_lists_its_variables() -> None:
    result = run(["demo", "--help"], {})
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  SIDECARS_DEMO_BASE_PORT +18000$", result.stdout, re.MULTILINE)
    assert "--duration" in result.stdout


def test_health_exits_1_when_the_admin_port_does_not_speak_http() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        answer = threading.Thread(target=lambda: _answer_garbage(listener), daemon=True)
        answer.start()
        result = run(
            ["health", "breaker"],
            {"BREAKER_UPSTREAM": "http://svc:80", "BREAKER_ADMIN_LISTEN": f"127.0.0.1:{port}"},
        )
        answer.join(5)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}/healthz" in result.stderr


def _answer_garbage(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        connection.recv(4096)
        connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
