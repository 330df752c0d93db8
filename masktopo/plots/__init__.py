r"""Figures of mask topology: metrics over training, the full-spectrum plane, degrees, spectra.

Every function returns a :class:`matplotlib.figure.Figure` (built without ``pyplot``, so no global
state and no display is involved; Jupyter shows the returned figure) and, given ``path``, also
writes it: the format comes from the suffix (``.png``, ``.svg`` or ``.pdf``; vector formats keep
text as text in PDF and as glyph outlines in SVG) and the file is written atomically. Functions
drawing into one set of axes also accept ``ax`` to draw into an existing figure.

All figures share one style (:data:`STYLE`, applied while drawing and saving, never globally):
labelled axes with units, no top/right spines, a light grid, the legend outside the axes so that it
never hides data. A series with one or two defined points is drawn as markers only (a line
between two points would suggest values in between); the legend shows each series with the marker
and line style it is drawn with, and series with no defined value are named in the legend as not
drawn. ``title`` is the default title when ``None``, no title when ``""``, and otherwise replaces
it, with ``{}`` standing for the default (``title="{} (ResNet-18, RigL)"``). Default titles say
what is drawn, not which run folder it came from.

Run figures take the run-analysis table of :func:`masktopo.analysis.runs.analyze_run` (one row per
event and layer plus a ``"(network)"`` row per event; columns ``event``, ``step``, ``epoch``,
``layer``, the metrics of :mod:`masktopo.analysis.metrics` and the event scalars ``density``,
``R_s``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``). Values that are undefined (NaN)
are drawn as gaps in the lines, never as zeros.

Layer figures take a :class:`~masktopo.masks.MaskSet` and a layer name, or a single mask tensor.

Colours follow the Okabe–Ito palette, which stays distinguishable under the common forms of
colour-vision deficiency [OI08]_; with more layers than it has colours, layers are coloured along
the perceptually uniform, colour-blind-safe ``cividis`` map from input to output, with a colour bar.

=========================  ========================================================================
function                   figure
=========================  ========================================================================
:func:`plot_metric`        one metric against training step, one line per layer and the network
:func:`plot_runs`          one metric against training step for several runs
:func:`plot_spectrum_plane`  the full-spectrum coordinate plane (Δr, λ) with trajectories
:func:`plot_degrees`       fan-in / fan-out degree histograms of one layer
:func:`plot_spectrum`      singular values of one layer's biadjacency with the Ramanujan bound
:func:`plot_bipartite`     one small layer drawn as a bipartite graph
:func:`plot_run`           the standard set of figures of one or several runs, written to a folder
=========================  ========================================================================

References
----------
.. [OI08] M. Okabe, K. Ito, "Color Universal Design (CUD): How to make figures and presentations
   that are friendly to colorblind people", J*FLY, 2008.
"""

# Imported "as themselves": the other public names of the former single module (the other
# packages' figures use the palette; the size limits of the layer figures), kept importable here.
from .layer import LARGE_MODES as LARGE_MODES
from .layer import MAX_DRAW_EDGES as MAX_DRAW_EDGES
from .layer import MAX_DRAW_NODES as MAX_DRAW_NODES
from .layer import MAX_GROUPS as MAX_GROUPS
from .layer import MAX_SPECTRUM_ENTRIES as MAX_SPECTRUM_ENTRIES
from .layer import plot_bipartite, plot_degrees, plot_spectrum
from .series import NETWORK as NETWORK
from .series import PLOT_METRICS, STANDARD_METRICS
from .series import PlotMetric as PlotMetric
from .style import BLACK as BLACK
from .style import FORMATS, OKABE_ITO, STYLE, save_figure
from .style import GREY as GREY
from .training import plot_metric, plot_run, plot_runs, plot_spectrum_plane

__all__ = [
    "FORMATS",
    "OKABE_ITO",
    "PLOT_METRICS",
    "STANDARD_METRICS",
    "STYLE",
    "plot_bipartite",
    "plot_degrees",
    "plot_metric",
    "plot_run",
    "plot_runs",
    "plot_spectrum",
    "plot_spectrum_plane",
    "save_figure",
]
