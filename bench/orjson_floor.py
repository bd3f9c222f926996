"""The Python floor for the log adapter: the least work that still parses and re-emits JSON.

Read lines on stdin; a line starting with ``{`` is parsed with orjson, any other line becomes
``{"message": line}``; every record is written as one JSON line. No levels, timestamps,
multi-line joining or redaction: a real adapter cannot be faster than this in Python.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson


def main() -> None:
    write = sys.stdout.buffer.write
    newline = orjson.OPT_APPEND_NEWLINE
    for raw in sys.stdin.buffer:
        line = raw.rstrip(b"\r\n")
        record: Any = None
        if line.startswith(b"{"):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
        if not isinstance(record, dict):
            record = {"message": line.decode("utf-8", "replace")}
        write(orjson.dumps(record, option=newline))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
