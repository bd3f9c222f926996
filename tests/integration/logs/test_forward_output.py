"""The forward:// output: at-least-once to a second adapter acting as the collector, which
is stopped for a while and started again."""

from __future__ import annotations

import subprocess
from collections import Counter

from logadapter_support import StartAdapter, forward_env, wait_for
from support import LOOPBACK, free_port, metric_value


def test_every_record_arrives_although_the_collector_restarts(adapters: StartAdapter) -> None:
    collector_port = free_port()
    collector_env = forward_env(collector_port)
    collector = adapters(collector_env)
    output = f"forward://{LOOPBACK}:{collector_port}"
    sender = adapters(
        {
            "LOGADAPTER_INPUTS": "stdin",
            "LOGADAPTER_OUTPUTS": f"stdout,{output}",
            "LOGADAPTER_SERVICE": "checkout",
        },
        stdin=subprocess.PIPE,
    )
    assert sender.process is not None and sender.process.stdin is not None
    stdin = sender.process.stdin

    def send(start: int, count: int) -> None:
        stdin.write(
            "".join(f'level=warn msg="event {n}"\n' for n in range(start, start + count)).encode()
        )
        stdin.flush()

    send(0, 1000)
    collector.wait_records(999)
    assert collector.terminate() == 0  # the collector goes away...
    first_run = collector.messages()
    send(1000, 1000)  # ...while records keep coming
    wait_for(
        lambda: metric_value(sender.metrics(), "logadapter_output_errors_total", output=output) >= 2
    )
    wait_for(lambda: len(sender.records()) >= 1999)  # stdout is not held up by the collector
    restarted = adapters(collector_env)
    send(2000, 1000)
    stdin.close()
    assert sender.process.wait(30) == 0
    wait_for(lambda: len(set(first_run + restarted.messages())) == 3000, 30)
    counts = Counter(first_run + restarted.messages())
    assert set(counts) == {f"event {n}" for n in range(3000)}
    record = restarted.records()[-1]
    assert record["service"] == "checkout"
    assert record["level"] == "warn"
    assert sorted(sender.messages()) == sorted(counts)


def test_the_output_authenticates_with_the_shared_key(adapters: StartAdapter) -> None:
    collector_port = free_port()
    collector = adapters(forward_env(collector_port, LOGADAPTER_FORWARD_SHARED_KEY="k3y"))
    sender = adapters(
        {
            "LOGADAPTER_INPUTS": "stdin",
            "LOGADAPTER_FORWARD_SHARED_KEY": "k3y",
            "LOGADAPTER_OUTPUTS": f"forward://{LOOPBACK}:{collector_port}",
        },
        stdin=subprocess.PIPE,
    )
    assert sender.process is not None and sender.process.stdin is not None
    sender.process.stdin.write(b"signed and delivered\n")
    sender.process.stdin.close()
    assert sender.process.wait(30) == 0
    assert collector.wait_records(1)[0]["message"] == "signed and delivered"
