"""The package version, in one place below every layer (``advkd.__version__`` re-exports it)."""

__version__ = "0.1.0"
