"""Figures of masktopo.plots: written as PNG and SVG, not blank, NaN drawn as gaps."""

import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

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
    assert "full-spectrum" in ax.get_title() and "demo" in ax.get_title()
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
    val = line_by_label(acc, "val_acc").get_ydata()
    assert math.isnan(val[1]) and np.allclose(val[[0, 2, 3]], [0.4, 0.6, 0.7])
    assert np.allclose(line_by_label(acc, "train_acc").get_ydata(), [0.5, 0.6, 0.7, 0.8])


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
    assert ax.get_xlabel() == "epoch" and len(ax.get_lines()) == 25


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
    assert "fan-in" in left.get_xlabel() and left.get_ylabel() == "number of nodes"
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
        plots.plot_bipartite(big)
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
