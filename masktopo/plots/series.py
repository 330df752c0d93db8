"""What a run table offers to plot: :data:`PLOT_METRICS` (axis labels and titles of every
metric) and the helpers that read series, layers and colours from the table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.metrics import METRICS
from ..errors import MaskValidationError, UnknownNameError
from ..options import X_AXES
from .style import OKABE_ITO

NETWORK = "(network)"


#: The metrics :func:`plot_run` draws by default (those present in the table).
STANDARD_METRICS = (
    "ramanujan_gap",
    "weighted_spectral_gap",
    "imdb_ramanujan_gap",
    "imdb_weighted_gap",
    "full_spectrum_norm",
    "density",
    "R_s",
    "accuracy",
)


@dataclass(frozen=True)
class PlotMetric:
    """A plottable quantity: table columns, axis label (with units) and title."""

    name: str
    columns: tuple[str, ...]
    label: str
    title: str
    event_scalar: bool = False  # one value per event (taken from the network rows)
    weighted: bool = False  # needs weights (masks dumped with weights)


def _registry() -> dict[str, PlotMetric]:
    dimless = "dimensionless"
    special = {
        "ramanujan_gap": ("Δr (eigenvalue, dimensionless)", "Ramanujan gap Δr = bound − μ̂"),
        "ramanujan_gap_norm": ("Δr / bound (dimensionless)", "normalised Ramanujan gap"),
        "ramanujan_bound": ("√(d̄_in−1) + √(d̄_out−1) (eigenvalue)", "Ramanujan bound"),
        "weighted_spectral_gap": ("λ (units of |w|)", "weighted spectral gap λ = σ₁ − σ₂ of |W⊙M|"),
        "imdb_ramanujan_gap": ("IMDB Δr (eigenvalue, dimensionless)",
                               "IMDB Δr (mean over nested regular subgraphs)"),
        "imdb_weighted_gap": ("IMDB λ (units of |w|)", "IMDB λ (mean over nested regular subgraphs)"),
        "full_spectrum_norm": ("‖(Δr, λ, IMDB Δr, IMDB λ)‖₂ (mixed units)",
                               "full-spectrum norm (N23)"),
        "density": ("density (fraction of weights kept)", "density"),
        "mu0": ("μ₀ = σ₁ (eigenvalue)", "largest eigenvalue μ₀"),
        "mu_hat": ("μ̂ = σ₂ (eigenvalue)", "largest non-trivial eigenvalue μ̂"),
        "is_ramanujan": ("fraction of layers (0–1)", "Ramanujan layers (Δr ≥ 0)"),
    }  # fmt: skip
    reg: dict[str, PlotMetric] = {}
    for name, m in METRICS.items():
        if name in special:
            label, title = special[name]
        else:
            unit = "count" if name.startswith("n_") or name.endswith("_n_groups") else dimless
            if m.weighted:
                unit = "units of |w|"
            label, title = f"{name} ({unit})", m.description
        reg[name] = PlotMetric(name, (name,), label, title, weighted=m.weighted)
    scalars = {
        "R_s": (("R_s",), "R_s (fraction of weights ever active)", "ITOP exploration rate R_s"),
        "accuracy": (("train_acc", "val_acc"), "accuracy (fraction correct)", "accuracy"),
        "train_acc": (("train_acc",), "accuracy (fraction correct)", "training accuracy"),
        "val_acc": (("val_acc",), "accuracy (fraction correct)", "validation accuracy"),
        "loss": (("train_loss", "val_loss"), "loss (training objective, nats)", "loss"),
        "train_loss": (("train_loss",), "loss (training objective, nats)", "training loss"),
        "val_loss": (("val_loss",), "loss (training objective, nats)", "validation loss"),
    }
    for name, (cols, label, title) in scalars.items():
        reg[name] = PlotMetric(name, cols, label, title, event_scalar=True)
    return reg


#: Name → :class:`PlotMetric`: every analysis metric plus ``R_s``, ``accuracy``, ``loss`` and the
#: individual ``train_*`` / ``val_*`` scalars.
PLOT_METRICS: dict[str, PlotMetric] = _registry()


def _metric(name: str, tables: Sequence) -> PlotMetric:
    if not isinstance(name, str):
        raise MaskValidationError(f"a metric name must be a string, not {type(name).__name__}")
    if name in PLOT_METRICS:
        pm = PLOT_METRICS[name]
    else:
        numeric = {c for t in tables for c in t.columns if _is_numeric(t[c])}
        numeric -= {"event", "step", "epoch"}
        if name not in numeric:
            raise UnknownNameError("metric", name, set(PLOT_METRICS) | numeric)
        pm = PlotMetric(name, (name,), name, name)
    for t in tables:
        missing = [c for c in pm.columns if c not in t.columns]
        if len(missing) == len(pm.columns):
            raise MaskValidationError(
                f"metric {name!r}: the table has no column {' or '.join(map(repr, pm.columns))}"
                + (
                    " (a weighted metric: it needs masks dumped with weights)"
                    if pm.weighted
                    else ""
                )
            )
    return pm


def _is_numeric(s) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def _values(s) -> np.ndarray:
    """A column as float64 with NaN for missing values (nullable ints/booleans included)."""
    import pandas as pd

    try:
        return s.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _check_table(table, x: str, what: str = "table"):
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise MaskValidationError(
            f"expected a run-analysis table (pandas.DataFrame), not {type(table).__name__}"
        )
    if x not in X_AXES:
        raise UnknownNameError("x axis", x, X_AXES)
    missing = [c for c in ("event", "layer", x) if c not in table.columns]
    if missing:
        raise MaskValidationError(
            f"{what} is not a run-analysis table: it lacks column(s) {', '.join(missing)}"
        )
    if len(table) == 0:
        raise MaskValidationError(f"{what} has no rows")
    return table


def _tables(table_or_tables, labels) -> tuple[list, list[str]]:
    import pandas as pd

    if isinstance(table_or_tables, pd.DataFrame):
        tables = [table_or_tables]
    elif isinstance(table_or_tables, Mapping):
        if labels is None:
            labels = [str(k) for k in table_or_tables]
        tables = list(table_or_tables.values())
    else:
        tables = list(table_or_tables)
    if not tables:
        raise MaskValidationError("no run-analysis table given")
    if labels is None:
        labels = [_run_label(t, i) for i, t in enumerate(tables)]
    labels = [str(x) for x in labels]
    if len(labels) != len(tables):
        raise MaskValidationError(f"{len(labels)} labels for {len(tables)} tables")
    return tables, labels


def _run_label(table, i: int) -> str:
    run = getattr(table, "attrs", {}).get("run")
    return Path(str(run)).name if run else f"run {i + 1}"


def _layer_order(table) -> list[str]:
    return list(dict.fromkeys(x for x in table["layer"] if x != NETWORK))


def _series(table, layer: str, column: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """One value per event (NaN where the layer has no row or no value), sorted by ``x``."""
    import pandas as pd

    if layer == NETWORK and column == "is_ramanujan" and "ramanujan_fraction" in table.columns:
        column = "ramanujan_fraction"  # the network row's fraction of Ramanujan layers

    events = np.unique(table["event"].to_numpy())
    if x == "event":
        per_event = pd.Series(events, index=events)
    else:
        per_event = table.drop_duplicates("event").set_index("event")[x]
    rows = table[table["layer"] == layer].drop_duplicates("event").set_index("event")
    y = np.full(events.size, np.nan)
    if column in rows.columns and len(rows):
        vals = _values(rows[column])
        pos = np.searchsorted(events, rows.index.to_numpy())
        y[pos] = vals
    xs = _values(per_event.reindex(events))
    order = np.argsort(xs, kind="stable")
    return xs[order], y[order]


def _scalar_series(table, column: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """An event scalar, from the network rows (or the first row of each event)."""
    if not (table["layer"] == NETWORK).any():
        table = table.drop_duplicates("event").assign(layer=NETWORK)
    return _series(table, NETWORK, column, x)


def _layer_colours(n: int):
    """``n`` colours: Okabe–Ito when they suffice, else cividis from input to output."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n]), None
    from matplotlib import colormaps

    cmap = colormaps["cividis"]
    return [cmap(0.92 * i / max(n - 1, 1)) for i in range(n)], cmap


def _layer_colourbar(fig, ax, names: list[str], colours) -> None:
    """A discrete colour bar naming (up to 8 of) the layers, input at the bottom."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    n = len(names)
    sm = ScalarMappable(norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), cmap=ListedColormap(colours))
    cb = fig.colorbar(sm, ax=ax, pad=0.01, fraction=0.04)
    ticks = sorted({round(i) for i in np.linspace(0, n - 1, min(n, 8))})
    cb.set_ticks(ticks)
    cb.set_ticklabels([_short(names[i]) for i in ticks], fontsize=7)
    cb.set_label("layer (input → output)")


def _short(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _select_layers(table, layers) -> list[str]:
    known = _layer_order(table)
    if layers is None:
        chosen = known
    else:
        chosen = [layers] if isinstance(layers, str) else list(layers)
        for name in chosen:
            if name not in known and name != NETWORK:
                raise UnknownNameError("layer", name, known)
        chosen = [c for c in chosen if c != NETWORK]
    return chosen
