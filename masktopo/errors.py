"""User-facing errors.

Every problem a user can cause (a bad file, a bad argument, a mask that does not fit its weights)
raises a subclass of :class:`MaskTopoError` whose message is one line that names the file or the
argument and says what is wrong. The command line prints that line and exits non-zero; it never
shows a traceback for these errors.
"""

from __future__ import annotations


class MaskTopoError(Exception):
    """Base class of every error masktopo raises on bad input."""


class MaskValidationError(MaskTopoError, ValueError):
    """A mask, a weight or a layer description is invalid (dtype, shape, name, values)."""


class MaskFileError(MaskTopoError):
    """A file or run directory cannot be read or written.

    Parameters
    ----------
    path : str or os.PathLike
        The file the problem is in; it starts the message.
    problem : str
        What is wrong, in words a user can act on.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnknownNameError(MaskTopoError, ValueError):
    """A name (metric, method, format, ...) is not one of the known ones.

    The message lists the known names, after the closest one when the name looks misspelled
    (``unknown metric 'rmanujan_gap' (did you mean 'ramanujan_gap'?); known: ...``).
    """

    def __init__(self, what: str, name: str, known):
        import difflib

        self.what = what
        self.name = name
        self.known = sorted(known)
        close = difflib.get_close_matches(str(name), [str(k) for k in self.known], n=1,
                                          cutoff=0.75)  # fmt: skip
        hint = f" (did you mean {close[0]!r}?)" if close and close[0] != name else ""
        super().__init__(f"unknown {what} {name!r}{hint}; known: {', '.join(self.known)}")


def one_line(e: BaseException, *, whole: bool = False) -> str:
    """``Type: first sentence`` of an exception, on one line (at most 200 characters): how a
    library's error is quoted inside a masktopo message. ``whole``: the whole message with its
    lines joined instead (a user's own error, where the second line may be the point)."""
    if whole:
        text = " ".join(str(e).split())
    else:
        lines = str(e).strip().splitlines()
        text = lines[0].strip() if lines else ""
        text = text.split(". ")[0].rstrip(".")
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
