"""Timing harness behind ``make bench``: ``python -m benchmarks.bench``."""
