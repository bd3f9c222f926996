"""Fixtures for the ambassador tests (upstreams and proxies come from ../conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme


@pytest.fixture
def private_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    """A CA of our own and its certificate as a PEM file (for AMBASSADOR_UPSTREAM_CA_FILE)."""
    ca = trustme.CA()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return ca, pem
