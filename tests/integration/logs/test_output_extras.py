"""An output configured without the optional extra it needs is a configuration error (exit 2,
naming the variable), found before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

WITHOUT_MODULE = (
    "import sys; sys.modules[{module!r}] = None; "  # what an absent package looks like
    "from sidecars.cli import main; sys.argv = ['sidecars', 'config', 'log-adapter']; "
    "sys.exit(main())"
)


@pytest.mark.parametrize(
    ("output", "module", "extra"),
    [
        ("cloudwatch:///ecs/shop", "botocore", "cloudwatch"),
        ("otlp+http://otel:4318", "opentelemetry", "otlp"),
    ],
)
def test_an_output_without_its_extra_exits_2_naming_the_variable(
    output: str, module: str, extra: str
) -> None:
    env = {**os.environ, "LOGADAPTER_OUTPUTS": output, "AWS_REGION": "eu-west-1"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODULE.format(module=module)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"LOGADAPTER_OUTPUTS has {output}" in done.stderr + done.stdout
    assert f"pip install 'sidecars[{extra}]'" in done.stderr + done.stdout
