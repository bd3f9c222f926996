"""Developer tools (not shipped in the package)."""
