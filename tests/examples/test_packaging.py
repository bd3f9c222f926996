"""`pip install .` must ship every package: the demo runs the installed modules, and
setuptools' explicit package list in pyproject.toml silently drops a new subpackage."""

from __future__ import annotations

import tomllib

from deploy_artifacts import REPO


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
