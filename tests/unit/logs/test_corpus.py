"""The realistic corpus under ``corpus/``: each ``<name>.log`` through the processor must give
exactly the records in ``<name>.expected.jsonl``.

The expected files were written by running with ``UPDATE_CORPUS=1`` and then read and
checked by hand; rerun that way after an intended change and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from sidecars.logs.model import LogLine, Record
from sidecars.logs.processor import LogProcessor
from sidecars.settings import load_log_adapter

CORPUS = Path(__file__).parent / "corpus"
NOW = 1795694400.0  # 2026-11-26T12:00:00Z: years of syslog 3164 and klog lines are inferred
CASES = sorted(path.stem for path in CORPUS.glob("*.log"))


def process(name: str) -> list[Record]:
    processor = LogProcessor(load_log_adapter({}), clock=lambda: NOW)
    text = (CORPUS / f"{name}.log").read_text(encoding="utf-8")
    lines = [
        LogLine(text=line, received_at=NOW, input="stdin", stream_key=name)
        for line in text.split("\n")[:-1]
    ]
    return processor.push(lines) + processor.flush()


@pytest.mark.parametrize("name", CASES)
def test_corpus_file_gives_the_expected_records(name: str) -> None:
    records = process(name)
    expected_path = CORPUS / f"{name}.expected.jsonl"
    if os.environ.get("UPDATE_CORPUS"):
        expected_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    expected = [orjson.loads(line) for line in expected_path.read_bytes().splitlines()]
    assert [orjson.loads(orjson.dumps(r)) for r in records] == expected


def test_every_corpus_file_has_expectations() -> None:
    assert CASES
    for name in CASES:
        assert (CORPUS / f"{name}.expected.jsonl").exists(), name
