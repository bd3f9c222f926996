"""Benchmarks: each measures a sidecar beside a peer in the same run and reports ratios."""
