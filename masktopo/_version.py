"""Package version (single source: read by pyproject and by run.json writers)."""

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Versions of masktopo and what its results depend on, for the ``run.json`` of PAGS runs
    and training runs (imports numpy and torch; scipy's is read from its installed metadata:
    importing it costs ~0.15 s that PAGS does not otherwise spend)."""
    import platform
    from importlib import metadata

    import numpy
    import torch

    return {
        "masktopo": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": metadata.version("scipy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> str | None:
    """The commit of the masktopo checkout this code runs from, or None (an installed wheel)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (root / ".git" / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return None
