"""Package version (single source: read by pyproject and by run.json writers)."""

__version__ = "0.1.0"
