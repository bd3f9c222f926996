"""The log adapter: sources -> framing -> parse -> normalise -> buffer -> sinks."""

from importlib.machinery import EXTENSION_SUFFIXES


def build_kind() -> str:
    """``compiled`` when the per-line modules (``setup.py``'s ``COMPILED_MODULES``) were
    loaded from extension modules built by mypyc, as in the images; else ``pure Python``."""
    from sidecars.logs import processor  # noqa: PLC0415 (not at every import of the package)

    compiled = (processor.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))
    return "compiled" if compiled else "pure Python"
