"""Configuration errors go to stderr, which ends up in container logs: through the real
``sidecars`` command, a bad value's password or secret query value is never printed."""

import os
import subprocess
import sys

import pytest

SECRET = "PASSWORD-1234"


def config_errors(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sidecars", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert SECRET not in result.stdout
    return result.stderr


@pytest.mark.parametrize("command", ["breaker", "ambassador", "config breaker"])
def test_proxy_upstream_errors_mask_credentials(command: str) -> None:
    prefix = command.rsplit(maxsplit=1)[-1].upper()
    stderr = config_errors(
        command.split(),
        {
            f"{prefix}_UPSTREAM": f"http://user:{SECRET}@orders:8080",
            f"{prefix}_FALLBACK_UPSTREAM": f"https://backup/v1?access_token={SECRET}",
            f"{prefix}_STATE_REDIS_URL": f"http://:{SECRET}@redis:6379",
        },
    )
    assert SECRET not in stderr
    assert f"{prefix}_UPSTREAM='http://user:***@orders:8080' is invalid" in stderr
    assert f"{prefix}_FALLBACK_UPSTREAM='https://backup/v1?access_token=***' is invalid" in stderr
    assert f"{prefix}_STATE_REDIS_URL='http://:***@redis:6379' is invalid" in stderr


def test_log_adapter_output_errors_mask_credentials() -> None:
    stderr = config_errors(
        ["log-adapter"],
        {
            "LOGADAPTER_OUTPUTS": f"forward://fluent:{SECRET}@collector:24224,stdout,"
            f"ftp://logs/in?key={SECRET}"
        },
    )
    assert SECRET not in stderr
    assert "LOGADAPTER_OUTPUTS='forward://fluent:***@collector:24224' is invalid" in stderr
    assert "LOGADAPTER_OUTPUTS='ftp://logs/in?key=***' is invalid" in stderr
