"""The shared look of every figure (palette, :data:`STYLE`, titles and legends) and
:func:`save_figure`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ..errors import UnknownNameError

#: Okabe–Ito colours (orange, sky blue, bluish green, blue, vermillion, reddish purple); yellow
#: is left out (too light for lines on white) and black is kept for the network line.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7")


BLACK = "#000000"


GREY = "#999999"


#: File formats :func:`save_figure` writes (from the path's suffix).
FORMATS = ("png", "svg", "pdf")


_DPI = 150


#: The matplotlib settings every figure is drawn and saved with (a ``rc_context``, never global).
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "lines.solid_capstyle": "round",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "pdf.fonttype": 42,  # TrueType: text stays text (selectable, editable) in PDF
    "ps.fonttype": 42,
    "svg.fonttype": "path",  # glyph outlines: the SVG looks the same without the fonts
    "svg.hashsalt": "masktopo",  # fixed ids: the same figure gives the same bytes
}


def _styled(fn):
    """Run ``fn`` inside :data:`STYLE` (rc settings are read while artists are made and saved)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _format_of(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UnknownNameError("figure format (file suffix)", fmt or "<none>", FORMATS)
    return fmt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` atomically to ``path``, in the format of its suffix (png, svg, pdf).

    SVG and PDF are written without a creation date, so the same figure gives the same bytes.

    Raises
    ------
    UnknownNameError
        For a suffix that is not a known format.
    MaskFileError
        When the file cannot be written (e.g. its folder does not exist).
    """
    import matplotlib

    from ..files import atomic_write

    path = Path(path)
    fmt = _format_of(path)
    meta = {"png": {"Software": "masktopo"}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}

    def write(f):
        with matplotlib.rc_context(STYLE):
            fig.savefig(f, format=fmt, dpi=_DPI, metadata=meta[fmt])

    atomic_write(path, write)
    return path


def _finish(fig, path) -> Any:
    if getattr(fig, "_masktopo_layout", False):
        # Lay the figure out once and keep that layout: constrained layout with a legend outside
        # the axes moves them a little on every draw, so each save would differ in its last digits.
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    if path is not None:
        save_figure(fig, path)
    return fig


def _new_figure(figsize):
    """A figure of our own (laid out once by :func:`_finish`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    fig._masktopo_layout = True
    return fig


def _new_axes(ax, figsize=(7.5, 4.5)):
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(figsize)
    return fig, fig.add_subplot()


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _title_text(title: str | None, default: str) -> str:
    """The title to draw: ``None`` the default, ``""`` none, ``{}`` in a title the default."""
    if title is None:
        return default
    return title.replace("{}", default)


def _title(ax, title: str | None, default: str) -> None:
    """A title wrapped to the axes' width (about 11 characters per inch at 10 pt)."""
    text = _title_text(title, default)
    if not text:
        return
    width = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(_wrap(text, max(30, int(width * 11))))


def _legend(ax, *, outside: bool = True, **kw) -> None:
    """The legend, outside the axes on the right (it never hides data), or where ``kw`` says."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if outside and "loc" not in kw:
        kw.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.legend(**kw)
