"""Container health check without curl: ``python -m sidecars_examples.probe [URL]``.

Exits 0 when the URL (default ``$PROBE_URL``, else http://127.0.0.1:8080/healthz) answers 2xx
within two seconds, 1 otherwise, with the reason on stderr.
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def probe(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError as error:  # URLError and HTTPError included
        print(f"probe {url}: {error}", file=sys.stderr)
        return 1


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PROBE_URL", DEFAULT_URL)
    sys.exit(probe(url))


if __name__ == "__main__":
    main()
