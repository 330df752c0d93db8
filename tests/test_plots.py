"""Figures of masktopo.plots: written as PNG, SVG and PDF, not blank, NaN drawn as gaps, and every
figure kind with labelled axes, a legend matching its marks and the expected artists."""

import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.image import imread
from matplotlib.lines import Line2D

from masktopo import MaskSet, plots
from masktopo.analysis import aggregate, analyze, layer_metrics, top_singular_values
from masktopo.analysis.graph import biadjacency
from masktopo.errors import MaskFileError, MaskValidationError, UnknownNameError
from masktopo.examples import random_maskset

SHAPES = {"conv1.weight": (8, 3, 3, 3), "conv2.weight": (16, 8, 3, 3), "fc.weight": (10, 64)}
N_EVENTS = 4


def run_table(seed: int = 0, run: str | None = "runs/demo") -> pd.DataFrame:
    """A run-analysis table as analyze_run lays it out, from analyze + aggregate per event."""
    frames = []
    for k in range(N_EVENTS):
        ms = random_maskset(SHAPES, 0.5 - 0.1 * k, weights=True, seed=100 * seed + k)
        df = analyze(ms)
        df = pd.concat([df, pd.DataFrame([aggregate(df)])], ignore_index=True)
        df.insert(0, "event", k)
        df.insert(1, "step", 250 * k)
        df.insert(2, "epoch", k)
        df["R_s"] = 0.5 + 0.1 * k
        df["train_acc"] = 0.5 + 0.1 * k
        df["val_acc"] = math.nan if k == 1 else 0.4 + 0.1 * k
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    if run:
        table.attrs["run"] = run
    return table


@pytest.fixture(scope="module")
def table():
    return run_table()


@pytest.fixture(scope="module")
def other():
    return run_table(seed=1, run="runs/other")


@pytest.fixture(scope="module")
def maskset():
    return random_maskset(SHAPES, 0.3, weights=True, seed=0)


def assert_image(path):
    """A non-empty PNG whose pixels are not all the same, or a well-formed non-empty SVG."""
    assert path.is_file() and path.stat().st_size > 0, path
    if path.suffix == ".png":
        img = imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert (img != img[0, 0]).any(), f"{path} is a uniform image"
        assert img[..., :3].std() > 0.01
    else:
        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg")
        assert len(list(root.iter())) > 50  # drawn elements, not an empty canvas


def write_both(fig_fn, tmp_path, stem):
    paths = []
    for suffix in (".png", ".svg"):
        path = tmp_path / f"{stem}{suffix}"
        fig = fig_fn(path)
        assert fig.__class__.__name__ == "Figure"
        assert_image(path)
        paths.append(path)
    return fig, paths


def line_by_label(ax, label):
    lines = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(lines) == 1, [ln.get_label() for ln in ax.get_lines()]
    return lines[0]


# -- metrics over training ---------------------------------------------------------------------
def test_plot_metric_per_layer_and_network(table, tmp_path):
    fig, _ = write_both(
        lambda p: plots.plot_metric(table, "full_spectrum_norm", path=p), tmp_path, "fsn"
    )
    ax = fig.axes[0]
    assert ax.get_xlabel() == "training step (optimizer steps)" and "‖" in ax.get_ylabel()
    assert "full-spectrum" in ax.get_title() and "demo" not in ax.get_title()  # no folder name
    net = line_by_label(ax, "network")
    expected = table[table.layer == "(network)"]["full_spectrum_norm"].to_numpy()
    assert np.allclose(net.get_ydata(), expected) and list(net.get_xdata()) == [0, 250, 500, 750]
    assert {ln.get_label() for ln in ax.get_lines()} == {"conv1", "conv2", "fc", "network"}
    assert ax.get_legend() is not None
    colours = {ln.get_color() for ln in ax.get_lines()}
    assert len(colours) == 4 and colours <= {*plots.OKABE_ITO, plots.BLACK}


def test_nan_values_are_gaps_not_zeros(table):
    t = table.copy()
    sel = (t.layer == "conv2.weight") & (t.event == 2)
    t.loc[sel, "ramanujan_gap"] = math.nan
    t = t[~((t.layer == "fc.weight") & (t.event == 1))]  # a missing row is a gap too
    ax = plots.plot_metric(t, "ramanujan_gap").axes[0]
    y = line_by_label(ax, "conv2").get_ydata()
    assert math.isnan(y[2]) and not np.any(y[~np.isnan(y)] == 0)
    expected = table[table.layer == "conv2.weight"]["ramanujan_gap"].to_numpy()
    assert np.allclose(np.delete(y, 2), np.delete(expected, 2))
    y_fc = line_by_label(ax, "fc").get_ydata()
    assert len(y_fc) == N_EVENTS and math.isnan(y_fc[1])
    acc = plots.plot_metric(t, "accuracy").axes[0]
    val = line_by_label(acc, "validation").get_ydata()
    assert math.isnan(val[1]) and np.allclose(val[[0, 2, 3]], [0.4, 0.6, 0.7])
    assert np.allclose(line_by_label(acc, "training").get_ydata(), [0.5, 0.6, 0.7, 0.8])


def test_many_layers_get_a_colour_bar(table):
    # 8 copies of the three layers: more layers than the Okabe–Ito palette has colours
    parts = []
    for i in range(8):
        part = table[table.layer != "(network)"].copy()
        part["layer"] = part["layer"] + f".{i}"
        parts.append(part)
    big = pd.concat([*parts, table[table.layer == "(network)"]], ignore_index=True)
    fig = plots.plot_metric(big, "density", x="epoch")
    ax = fig.axes[0]
    assert len(fig.axes) == 2 and "layer" in fig.axes[1].get_ylabel()  # the colour bar
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["network"]
    assert ax.get_xlabel().startswith("epoch") and len(ax.get_lines()) == 25


def test_unknown_names(table):
    with pytest.raises(UnknownNameError, match=r"unknown metric 'ramanujan'.*ramanujan_gap"):
        plots.plot_metric(table, "ramanujan")
    with pytest.raises(UnknownNameError, match="full_spectrum_norm"):
        plots.plot_runs([table], "spectral_gapp")
    with pytest.raises(UnknownNameError, match=r"unknown layer 'conv9\.weight'"):
        plots.plot_metric(table, "density", layers=["conv9.weight"])
    with pytest.raises(UnknownNameError, match="unknown x axis 'time'"):
        plots.plot_metric(table, "density", x="time")
    no_w = table.drop(columns=["weighted_spectral_gap"])
    with pytest.raises(MaskValidationError, match="needs masks dumped with weights"):
        plots.plot_metric(no_w, "weighted_spectral_gap")
    with pytest.raises(MaskValidationError, match="lacks column"):
        plots.plot_metric(table.drop(columns=["event"]), "density")
    # another numeric column of the table is plottable by its own name
    t = table.assign(my_score=np.arange(len(table), dtype=float))
    assert plots.plot_metric(t, "my_score").axes[0].get_ylabel() == "my_score"


def test_plot_runs(table, other, tmp_path):
    fig, _ = write_both(
        lambda p: plots.plot_runs({"a": table, "b": other}, "ramanujan_gap", path=p),
        tmp_path,
        "cmp",
    )
    ax = fig.axes[0]
    a, b = line_by_label(ax, "a"), line_by_label(ax, "b")
    assert a.get_color() != b.get_color()
    assert np.allclose(a.get_ydata(), table[table.layer == "(network)"]["ramanujan_gap"])
    fig = plots.plot_runs([table, other], "val_acc", layer="conv1.weight")
    assert {ln.get_label() for ln in fig.axes[0].get_lines()} == {"demo", "other"}
    fig = plots.plot_runs([table, other], "density", layer="fc.weight")
    assert np.allclose(
        line_by_label(fig.axes[0], "demo").get_ydata(),
        table[table.layer == "fc.weight"]["density"],
    )


def test_spectrum_plane(table, other, tmp_path):
    fig, _ = write_both(
        lambda p: plots.plot_spectrum_plane([table, other], path=p), tmp_path, "plane"
    )
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("Δr") and ax.get_ylabel().startswith("λ")
    line = line_by_label(ax, "demo")
    net = table[table.layer == "(network)"]
    assert np.allclose(line.get_xdata(), net["ramanujan_gap"])
    assert np.allclose(line.get_ydata(), net["weighted_spectral_gap"])
    fig = plots.plot_spectrum_plane(table, layers=["(network)", *SHAPES])
    labels = {ln.get_label() for ln in fig.axes[0].get_lines()}
    assert {"network", "conv1", "conv2", "fc", "first event", "last event"} <= labels
    with pytest.raises(MaskValidationError, match="one layer"):
        plots.plot_spectrum_plane([table, other], layers=["conv1.weight", "fc.weight"])


# -- one layer ------------------------------------------------------------------------------------
def test_plot_degrees(maskset, tmp_path):
    fig, _ = write_both(
        lambda p: plots.plot_degrees(maskset, "conv2.weight", path=p), tmp_path, "d"
    )
    left, right = fig.axes
    B = biadjacency(maskset["conv2.weight"])
    assert sum(p.get_height() for p in left.patches) == B.shape[0]
    assert sum(p.get_height() for p in right.patches) == B.shape[1]
    assert "fan-in" in left.get_xlabel() and left.get_ylabel() == "number of nodes (count)"
    rolled = plots.plot_degrees(maskset["conv2.weight"], conv="rolled")
    assert sum(p.get_height() for p in rolled.axes[1].patches) == 8


def test_plot_spectrum_marks_the_ramanujan_bound(maskset, tmp_path):
    fig, _ = write_both(lambda p: plots.plot_spectrum(maskset, "fc.weight", path=p), tmp_path, "s")
    ax = fig.axes[0]
    r = layer_metrics(maskset["fc.weight"])
    bound = [ln for ln in ax.get_lines() if "Ramanujan bound" in ln.get_label()]
    assert len(bound) == 1 and np.allclose(bound[0].get_ydata(), r["ramanujan_bound"])
    sv = ax.get_lines()[0].get_ydata()
    assert np.allclose(sv[:2], top_singular_values(maskset["fc.weight"]).numpy())
    assert np.allclose(sv[:2], [r["mu0"], r["mu_hat"]])
    w = plots.plot_spectrum(maskset, "conv2.weight", weighted=True).axes[0]
    assert "|W⊙M|" in w.get_ylabel() and not any("bound" in ln.get_label() for ln in w.get_lines())
    with pytest.raises(MaskValidationError, match="needs a MaskSet with weights"):
        plots.plot_spectrum(maskset.without_weights(), "fc.weight", weighted=True)
    with pytest.raises(MaskValidationError, match="max_entries"):
        plots.plot_spectrum(maskset, "fc.weight", max_entries=10)
    with pytest.raises(MaskValidationError, match="no kept entry"):
        plots.plot_spectrum(torch.zeros(3, 3, dtype=torch.bool))


def test_plot_bipartite(tmp_path):
    m = torch.zeros(3, 4, dtype=torch.bool)
    m[0, 0] = m[0, 1] = m[2, 3] = True  # output 1 and input 2 isolated
    ms = MaskSet({"fc.weight": m})
    fig, _ = write_both(lambda p: plots.plot_bipartite(ms, "fc.weight", path=p), tmp_path, "b")
    ax = fig.axes[0]
    assert len(ax.collections[0].get_segments()) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["inputs (4)", "outputs (3)"]
    big = torch.ones(300, 300, dtype=torch.bool)
    with pytest.raises(MaskValidationError, match=r"600 nodes and 90,000 edges.*max_nodes"):
        plots.plot_bipartite(big, large="error")
    with pytest.raises(UnknownNameError, match="large-layer mode 'huge'"):
        plots.plot_bipartite(big, large="huge")
    with pytest.raises(MaskValidationError, match="name the layer"):
        plots.plot_bipartite(ms)


# -- files ------------------------------------------------------------------------------------------
def test_plot_run_single_and_several(table, other, tmp_path):
    paths = plots.plot_run(table, tmp_path / "one")
    names = [p.name for p in paths]
    assert names == [f"{m}.png" for m in plots.STANDARD_METRICS] + ["spectrum-plane.png"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
    assert_image(tmp_path / "one" / "density.png")
    paths = plots.plot_run({"a": table, "b": other}, tmp_path / "two", "density", ["svg", "png"])
    assert [p.name for p in paths] == [
        "compare-density.svg",
        "compare-density.png",
        "spectrum-plane.svg",
        "spectrum-plane.png",
    ]
    assert_image(paths[0])
    few = table[["event", "step", "epoch", "layer", "density", "R_s", "val_acc"]].copy()
    few["val_acc"] = math.nan  # the default set skips metrics without columns or values
    assert [p.name for p in plots.plot_run(few, tmp_path / "three")] == ["density.png", "R_s.png"]


def test_bad_formats_and_paths(table, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown metric 'nope'"):
        plots.plot_run(table, tmp_path / "x", metrics=["density", "nope"])
    assert not (tmp_path / "x").exists()  # nothing written before the check
    with pytest.raises(UnknownNameError, match="figure format 'jpg'"):
        plots.plot_run(table, tmp_path / "x", formats=["jpg"])
    fig = plots.plot_metric(table, "density")
    with pytest.raises(UnknownNameError, match="png, svg"):
        plots.save_figure(fig, tmp_path / "figure.bmp")
    with pytest.raises(MaskFileError, match="does not exist"):
        plots.save_figure(fig, tmp_path / "missing" / "figure.png")
    a, b = tmp_path / "a.svg", tmp_path / "b.svg"
    plots.save_figure(fig, a)
    plots.save_figure(fig, b)
    assert a.read_bytes() == b.read_bytes()  # no date, fixed ids: reproducible files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svg", "b.svg"]  # no temp files


# -- every figure kind: paper-ready ----------------------------------------------------------------
def check_figure(fig, tmp_path, stem: str, *, titled: bool = True) -> list:
    """Save ``fig`` as PNG and check each plotting axes: data drawn inside it (not blank), both axes
    labelled (the y label with its unit in parentheses), a title without the run folder's name.
    Returns the plotting axes (colour bars left out)."""
    path = plots.save_figure(fig, tmp_path / f"{stem}.png")
    img = imread(path)[..., :3]
    h, w = img.shape[:2]
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert axes
    for ax in axes:
        b = ax.get_position()  # figure fraction, as the layout of the save left it
        inner = img[int((1 - b.y1) * h) + 4 : int((1 - b.y0) * h) - 4,
                    int(b.x0 * w) + 4 : int(b.x1 * w) - 4]  # fmt: skip
        assert inner.size, f"{stem}: empty axes area"
        ink = int((inner < 0.75).any(axis=-1).sum())  # darker than the light grid and shading
        assert ink >= 150, f"{stem}: the axes area is (nearly) blank ({ink} pixels drawn)"
        ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert ax.get_xlabel().strip() or ticks, f"{stem}: no x label"
        assert ax.get_ylabel().strip() and "(" in ax.get_ylabel(), f"{stem}: {ax.get_ylabel()!r}"
    titles = [ax.get_title() for ax in axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
    assert any(titles) == titled, titles
    assert not any("demo" in t for t in titles), titles  # the run folder is not in the title
    return axes


def drawn_lines(ax) -> list:
    """The data series of ``ax``: lines with a legend label and at least one point."""
    return [
        ln for ln in ax.get_lines() if not ln.get_label().startswith("_") and len(ln.get_xdata())
    ]


def legend_texts(ax) -> list[str]:
    """The legend's texts, after checking each entry of a drawn line shows its marker, line style
    and colour."""
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    lines = {ln.get_label(): ln for ln in drawn_lines(ax)}
    assert len(legend.legend_handles) == len(texts)
    for handle, text in zip(legend.legend_handles, texts, strict=True):
        line = lines.get(text)
        if line is None or not isinstance(handle, Line2D):
            continue
        assert handle.get_marker() == line.get_marker(), text
        assert handle.get_linestyle() == line.get_linestyle(), text
        assert to_rgba(handle.get_color()) == to_rgba(line.get_color()), text
    for line in lines.values():  # every drawn series is in the legend
        assert line.get_label() in texts, (line.get_label(), texts)
    return texts


def outside(legend, ax) -> bool:
    return not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_metric_figures_are_labelled_and_their_legend_matches(table, tmp_path):
    layers = ["conv1", "conv2", "fc"]
    for metric, draw in (("density", "steps-post"), ("weighted_spectral_gap", "default")):
        fig = plots.plot_metric(table, metric)
        (ax,) = check_figure(fig, tmp_path, metric)
        assert legend_texts(ax) == [*layers, "network"]
        assert {ln.get_drawstyle() for ln in drawn_lines(ax)} == {draw}  # mask: steps-post
        markers = [ln.get_marker() for ln in drawn_lines(ax)]
        assert len(set(markers[:3])) == 3  # layers differ by marker, not only colour
        assert outside(ax.get_legend(), ax)  # the legend never hides data
    acc = plots.plot_metric(table, "accuracy")
    (ax,) = check_figure(acc, tmp_path, "accuracy")
    assert legend_texts(ax) == ["training", "validation"]
    train, val = drawn_lines(ax)
    assert train.get_marker() != val.get_marker() and train.get_color() != val.get_color()
    assert (train.get_linestyle(), val.get_linestyle()) == ("-", "--")
    (ax,) = check_figure(plots.plot_metric(table, "R_s"), tmp_path, "R_s")
    assert len(drawn_lines(ax)) == 1 and ax.get_legend() is None  # one series: the y label says it


def test_titles_default_none_or_templated(table, tmp_path):
    default = plots.plot_metric(table, "density").axes[0].get_title()
    assert default == "density per layer"
    fig = plots.plot_metric(table, "density", title="")
    check_figure(fig, tmp_path, "untitled", titled=False)
    fig = plots.plot_metric(table, "density", title="{} (RigL, 10%)")
    assert fig.axes[0].get_title() == "density per layer (RigL, 10%)"
    fig = plots.plot_degrees(random_maskset({"fc.weight": (6, 5)}, 0.5), "fc.weight", title="")
    assert fig._suptitle is None


@pytest.mark.parametrize("n_events", [1, 2])
def test_short_runs_draw_markers_with_a_matching_legend(table, tmp_path, n_events):
    """A run cut short: series of one or two points are markers, and so are their legend keys."""
    short = table[table.event < n_events].copy()
    short["val_acc"] = short["train_acc"]  # equal values: both series must stay visible
    for metric in ("accuracy", "weighted_spectral_gap", "density"):
        (ax,) = check_figure(plots.plot_metric(short, metric), tmp_path, f"{metric}-{n_events}")
        lines = drawn_lines(ax)
        assert lines
        for ln in lines:
            assert ln.get_linestyle() == "None" and ln.get_marker() not in ("None", "", None)
            assert ln.get_markersize() >= 6
        legend_texts(ax)
        if metric == "accuracy":
            train, val = lines
            assert np.allclose(train.get_ydata(), val.get_ydata())
            assert train.get_marker() != val.get_marker()
            assert val.get_markerfacecolor() == "none"  # hollow: the filled one shows through
    fig = plots.plot_runs({"a": short, "b": short}, "accuracy")
    (ax,) = check_figure(fig, tmp_path, f"runs-{n_events}")
    assert legend_texts(ax) == ["a: training", "a: validation", "b: training", "b: validation"]


def test_undefined_series_are_named_not_drawn(table, tmp_path):
    t = table.copy()
    t.loc[t.layer == "fc.weight", "ramanujan_gap"] = math.nan
    (ax,) = check_figure(plots.plot_metric(t, "ramanujan_gap"), tmp_path, "gap")
    texts = legend_texts(ax)
    assert texts[:3] == ["conv1", "conv2", "network"]
    assert "not drawn" in texts[-1] and "fc" in texts[-1]
    assert "fc" not in {ln.get_label() for ln in drawn_lines(ax)}


def test_comparison_and_plane_figures(table, other, tmp_path):
    fig = plots.plot_runs({"A": table, "B": other}, "ramanujan_gap")
    (ax,) = check_figure(fig, tmp_path, "compare")
    assert legend_texts(ax) == ["A", "B"] and "2 runs" in ax.get_title()
    fig = plots.plot_spectrum_plane(table, layers=["(network)", *SHAPES])
    (ax,) = check_figure(fig, tmp_path, "plane")
    texts = legend_texts(ax)
    assert {"network", "conv1", "first event", "last event"} <= set(texts)
    assert "Δr ≥ 0" in " ".join(texts) and ax.get_title().startswith("full-spectrum plane: λ")
    assert outside(ax.get_legend(), ax)


def test_layer_figures(maskset, tmp_path):
    left, right = check_figure(plots.plot_degrees(maskset, "conv2.weight"), tmp_path, "deg")
    for ax, sym in ((left, "d̄_out"), (right, "d̄_in")):
        texts = legend_texts(ax)
        assert texts[0].endswith(" nodes") and texts[1].startswith(sym)
        assert all(float(t).is_integer() for t in ax.get_yticks())  # counts: integer ticks
    (ax,) = check_figure(plots.plot_spectrum(maskset, "fc.weight"), tmp_path, "spec")
    texts = legend_texts(ax)
    assert texts[0].startswith("σᵢ") and any("Ramanujan bound" in t for t in texts)
    assert drawn_lines(ax)[0].get_linestyle() == "None"  # singular values are points
    (ax,) = check_figure(
        plots.plot_spectrum(maskset, "fc.weight", weighted=True), tmp_path, "wspec"
    )
    assert any(t.startswith("λ = σ₁ − σ₂") for t in legend_texts(ax))
    small = plots.plot_bipartite(maskset, "fc.weight")
    (ax,) = check_figure(small, tmp_path, "bip")
    B = biadjacency(maskset["fc.weight"])
    assert len(ax.collections[0].get_segments()) == int(B.count_nonzero())
    assert legend_texts(ax)[:3] == ["kept entry", "input node", "output node"]
    assert ax.get_legend().get_title().get_text() == ""  # everything drawn: no note


def test_large_layers_are_sampled_or_aggregated_and_say_so(tmp_path):
    g = torch.Generator().manual_seed(0)
    mid = torch.rand(100, 300, generator=g) < 0.78  # 400 nodes, ~23,400 edges: sampled
    n_edges = int(mid.sum())
    fig = plots.plot_bipartite(mid, "fc.weight")
    (ax,) = check_figure(fig, tmp_path, "sampled")
    assert len(ax.collections[0].get_segments()) == plots.MAX_DRAW_EDGES
    note = ax.get_legend().get_title().get_text()
    assert note == f"showing 2,000 of {n_edges:,} edges, sampled uniformly at random"
    assert f"{n_edges:,} edges" in ax.get_title()
    a, b = tmp_path / "a.svg", tmp_path / "b.svg"
    plots.plot_bipartite(mid, path=a)
    plots.plot_bipartite(mid, path=b)
    assert a.read_bytes() == b.read_bytes()  # a fixed seed: the same sample
    assert a.stat().st_size < 600_000  # not a multi-megabyte hairball
    big = torch.rand(300, 600, generator=g) < 0.1  # 900 nodes: aggregated
    fig = plots.plot_bipartite(big, "big.weight")
    (ax,) = check_figure(fig, tmp_path, "aggregated")
    assert len(ax.collections[0].get_segments()) <= plots.MAX_GROUPS**2
    assert ax.get_legend().get_title().get_text().startswith("aggregated: 900 nodes in blocks")
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "inputs (600 in 20 blocks)",
        "outputs (300 in 20 blocks)",
    ]
    sampled = plots.plot_bipartite(big, large="sample", max_edges=300).axes[0]
    assert len(sampled.collections[0].get_segments()) == 300


def test_vector_formats(table, tmp_path):
    fig = plots.plot_metric(table, "ramanujan_gap")
    pdf = plots.save_figure(fig, tmp_path / "gap.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/CreationDate" not in pdf
    assert b"/Type3" not in pdf and b"/FontFile2" in pdf  # TrueType: text stays text
    assert_image(plots.save_figure(fig, tmp_path / "gap.svg"))
    paths = plots.plot_run(table, tmp_path / "v", ["density"], ["svg", "pdf"], title="")
    assert [p.name for p in paths][:2] == ["density.svg", "density.pdf"]
