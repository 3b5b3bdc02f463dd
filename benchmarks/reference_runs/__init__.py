"""Whole runs of the methods' own reference scripts beside advkd's (docs/fidelity.md)."""
