"""The metric registry: metrics added through the public API flow everywhere (rows, tables,
aggregation, --list-metrics), bad registrations are one-line errors, a selection computes only
what it needs, and docs/metrics.md shows the registry's table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from masktopo.analysis import metrics
from masktopo.analysis.metrics import (
    INT_METRICS,
    METRICS,
    aggregate,
    analyze,
    layer_metrics,
    metric,
    metric_names,
    register_metric,
    resolve_metrics,
    unregister_metric,
)
from masktopo.cli import analyze as cli_analyze
from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.masks import MaskSet

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def _blocks(shapes) -> torch.Tensor:
    """Block-diagonal mask of complete blocks ``ones(a_i, b_i)``: σ are the ``√(a_i b_i)``."""
    B = torch.zeros(sum(a for a, _ in shapes), sum(b for _, b in shapes), dtype=torch.bool)
    r = c = 0
    for a, b in shapes:
        B[r : r + a, c : c + b] = True
        r, c = r + a, c + b
    return B


def _maskset() -> MaskSet:
    """Two layers with known spectra: K_{3,4} ⊕ K_{2,2} (σ = √12, 2) and K_{4,5} (σ = √20, 0)."""
    return MaskSet({"a.weight": _blocks([(3, 4), (2, 2)]), "b.weight": torch.ones(4, 5).bool()})


@pytest.fixture
def registered():
    """Register metrics for one test; every one is removed afterwards (dependents first)."""
    names: list[str] = []

    def add(name, compute, **spec):
        m = register_metric(name, compute, **spec)
        names.append(name)
        return m

    yield add
    for name in reversed(names):
        if name in METRICS:
            unregister_metric(name)


def _listed(name: str) -> str | None:
    """The ``--list-metrics`` line of ``name``, or None."""
    for line in cli_analyze.list_metrics().splitlines():
        if line.split() and line.split()[0] == name:
            return line
    return None


def mu_ratio(c):
    """mu_hat / mu0"""
    return c["mu_hat"] / c["mu0"]


def test_metric_from_metrics_appears_everywhere(registered):
    m = registered("mu_ratio", mu_ratio, depends=("mu_hat", "mu0"), group="spectral")
    assert m.description == "mu_hat / mu0" and not m.weighted and not m.integer
    assert metric_names()[-1] == metric_names(weighted=False)[-1] == "mu_ratio"
    assert resolve_metrics("mu_ratio", weighted=False) == ["mu_ratio"]

    ms = _maskset()
    df = analyze(ms)
    want = [2 / math.sqrt(12), 0.0]
    assert df["mu_ratio"].tolist() == pytest.approx(want, abs=1e-12)
    assert df["mu_ratio"].tolist() == pytest.approx((df["mu_hat"] / df["mu0"]).tolist())
    only = analyze(ms, metrics="mu_ratio")
    assert list(only.columns) == ["layer", "layer_kind", "shape", "mu_ratio", "reason"]
    assert only["mu_ratio"].tolist() == df["mu_ratio"].tolist()

    assert layer_metrics(ms["a.weight"], metrics=["mu_ratio"])["mu_ratio"] == df["mu_ratio"][0]
    assert layer_metrics(ms["b.weight"])["mu_ratio"] == df["mu_ratio"][1]
    assert aggregate(df)["mu_ratio"] == pytest.approx(np.mean(want))  # the mean by default

    line = _listed("mu_ratio")
    assert line is not None and "spectral" in line and "mu_hat / mu0" in line
    assert "mu_ratio" in metrics.metric_table_markdown()

    unregister_metric("mu_ratio")
    assert "mu_ratio" not in metric_names() and _listed("mu_ratio") is None
    assert "mu_ratio" not in analyze(ms).columns
    with pytest.raises(UnknownNameError):
        resolve_metrics("mu_ratio", weighted=False)


def test_metric_from_a_quantity_and_a_count(registered):
    registered("idle_outputs", lambda c: c["n_out"] - c["n_out_active"], integer=True,
               depends=("n_out", "n_out_active"), description="outputs without edges")  # fmt: skip
    try:

        @metric("sigma1_squared", depends=("sv_binary",), defined="the layer has edges")
        def sigma1_squared(c):
            """σ1(B)², |E| for a complete bipartite graph"""
            return float(c.quantity("sv_binary")[0]) ** 2 if c.has_edges() else math.nan

        assert METRICS["sigma1_squared"].description == "σ1(B)², |E| for a complete bipartite graph"
        assert "idle_outputs" in INT_METRICS and "sigma1_squared" not in INT_METRICS
        half = torch.zeros(4, 3, dtype=torch.bool)
        half[:2] = True
        ms = MaskSet({"k.weight": torch.ones(3, 4).bool(), "e.weight": torch.zeros(2, 5).bool(),
                      "h.weight": half})  # fmt: skip
        df = analyze(ms, allow_empty=True)
        assert df["sigma1_squared"][0] == pytest.approx(12.0)
        assert df["sigma1_squared"][2] == pytest.approx(6.0)
        assert math.isnan(df["sigma1_squared"][1]) and "layer has no edges" in df["reason"][1]
        assert df["idle_outputs"].dtype == "Int64"
        assert df["idle_outputs"].tolist() == [0, 2, 2]
        net = aggregate(df)
        assert net["idle_outputs"] == 4 and isinstance(net["idle_outputs"], int)  # summed
        assert net["sigma1_squared"] == pytest.approx(9.0)  # mean over defined layers
        assert aggregate(df, invalid="zero")["sigma1_squared"] == pytest.approx(6.0)
        row = layer_metrics(torch.ones(3, 4), metrics="sigma1_squared,idle_outputs")
        assert row == {"sigma1_squared": pytest.approx(12.0), "idle_outputs": 0, "reason": ""}
        assert _listed("sigma1_squared") is not None and _listed("idle_outputs") is not None
    finally:
        if "sigma1_squared" in METRICS:
            unregister_metric("sigma1_squared")
    assert "sigma1_squared" not in METRICS and "sigma1_squared" not in metric_names()


def test_weighted_metric_needs_weights(registered):
    registered("weighted_ratio", lambda c: c["weighted_mu_hat"] / c["weighted_mu0"],
               depends=("weighted_mu0", "weighted_mu_hat"), weighted=True,
               description="σ2/σ1 of |W ⊙ M|")  # fmt: skip
    assert "weighted_ratio" in metric_names() and "weighted_ratio" not in metric_names(False)
    assert "yes" in _listed("weighted_ratio")
    mask = _blocks([(3, 4), (2, 2)])
    w = torch.where(mask, 2.0, 0.0)
    assert layer_metrics(mask, w)["weighted_ratio"] == pytest.approx(2 / math.sqrt(12))
    assert "weighted_ratio" not in layer_metrics(mask)
    with pytest.raises(MaskValidationError, match="needs weights"):
        layer_metrics(mask, metrics="weighted_ratio")


def _one_line_error(match: str, fn, *args, **kw) -> None:
    with pytest.raises(MaskValidationError, match=match) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)


def test_bad_layer_metrics_arguments_are_one_line_errors():
    mask = _blocks([(3, 4), (2, 2)])
    _one_line_error(r"device 'gpu' is not a device \(RuntimeError: Expected one of",
                    layer_metrics, mask, device="gpu")  # fmt: skip
    _one_line_error("layer '<mask>': weight is a str, not a tensor", layer_metrics, mask, "w")
    _one_line_error("metrics must be a metric name or a list of names, not 3", layer_metrics,
                    mask, metrics=3)  # fmt: skip
    assert layer_metrics(mask, metrics="mu0", device="cpu")["mu0"] > 0


def test_bad_registrations_are_one_line_errors(registered):
    n = len(METRICS)
    _one_line_error("unknown 'no_such'", register_metric, "bad", mu_ratio, depends=("no_such",))
    _one_line_error("built in", register_metric, "mu0", mu_ratio)
    _one_line_error("built in", register_metric, "mu0", mu_ratio, replace=True)
    _one_line_error("reserved", register_metric, "reason", mu_ratio)
    _one_line_error("reserved", register_metric, "sv_binary", mu_ratio)
    _one_line_error("identifier", register_metric, "a,b", mu_ratio)
    _one_line_error("cycle: selfish -> selfish", register_metric, "selfish", mu_ratio,
                    depends=("selfish",))  # fmt: skip
    _one_line_error("weighted=True", register_metric, "w", mu_ratio, depends=("weighted_mu0",))
    _one_line_error("description", register_metric, "nodoc", lambda c: 0.0)
    assert len(METRICS) == n

    registered("first", mu_ratio, depends=("mu0",))
    registered("second", mu_ratio, depends=("first",))
    _one_line_error("already registered", register_metric, "first", mu_ratio)
    _one_line_error("cycle: first -> second -> first", register_metric, "first", mu_ratio,
                    depends=("second",), replace=True)  # fmt: skip
    assert METRICS["first"].depends == ("mu0",)  # unchanged by the refused redefinition
    _one_line_error("'second' depends on it", unregister_metric, "first")
    _one_line_error("built in", unregister_metric, "mu0")
    with pytest.raises(UnknownNameError):
        unregister_metric("never_registered")


def test_redefinition_reorders_the_computation(registered):
    registered("first_one", lambda c: 1.0, description="one")
    registered("then_two", lambda c: 2.0, description="two")
    registered("first_one", lambda c: c["then_two"] + 1, depends=("then_two",),
               description="then_two + 1", replace=True)  # fmt: skip
    assert layer_metrics(torch.ones(3, 3), metrics="first_one")["first_one"] == 3.0
    assert metric_names()[-2:] == ["first_one", "then_two"]  # the table keeps its order
    order = [m.name for m in metrics.select(["first_one", "then_two"]).metrics]
    assert order == ["then_two", "first_one"]  # the computation follows the dependencies


def test_formula_reads_only_declared_dependencies(registered):
    registered("sneaky", lambda c: c["mu0"], description="reads mu0 without declaring it")
    with pytest.raises(KeyError, match="does not depend on it"):
        layer_metrics(torch.ones(3, 3), metrics="mu0,sneaky")


def test_selection_plans_only_what_it_needs(monkeypatch):
    calls = {"imdb": 0, "jobs": []}
    plan_imdb, plan_layer = metrics._plan_imdb, metrics._plan_layer

    def spy_imdb(*args, **kw):
        calls["imdb"] += 1
        return plan_imdb(*args, **kw)

    def spy_layer(*args, **kw):
        plan = plan_layer(*args, **kw)
        calls["jobs"].extend(plan.slots)
        return plan

    monkeypatch.setattr(metrics, "_plan_imdb", spy_imdb)
    monkeypatch.setattr(metrics, "_plan_layer", spy_layer)
    ms = _maskset()
    df = analyze(ms, metrics="mu0")
    assert calls == {"imdb": 0, "jobs": ["sv_binary", "sv_binary"]}
    assert df["mu0"].tolist() == pytest.approx([math.sqrt(12), math.sqrt(20)])
    sel = metrics.select(["mu0"])
    assert [m.name for m in sel.metrics] == ["mu0"] and sel.quantities == {"sv_binary"}

    calls["jobs"].clear()
    analyze(ms, metrics="n_edges,density")
    assert calls == {"imdb": 0, "jobs": []}  # no spectral job at all

    analyze(ms, metrics="imdb_ramanujan_gap")
    assert calls["imdb"] == 2
    assert all(isinstance(k, tuple) and k[0] == "imdb_groups" for k in calls["jobs"])

    sel = metrics.select(["full_spectrum_norm"])
    assert sel.quantities == {"sv_binary", "sv_weighted", "imdb_groups", "imdb_weighted"}
    order = [m.name for m in sel.metrics]
    assert order[-1] == "full_spectrum_norm" and "normalized_spectral_gap" not in order
    assert order.index("mu_hat") < order.index("ramanujan_gap") < order.index("is_ramanujan")


def test_int_metrics_and_table_follow_the_registry():
    assert tuple(INT_METRICS) == ("n_out", "n_in", "numel", "n_edges", "n_out_active",
                                  "n_in_active", "n_components", "imdb_n_groups")  # fmt: skip
    assert list(METRICS)[:3] == ["n_out", "n_in", "numel"] and len(METRICS) == 30
    for name, m in METRICS.items():
        assert m.compute.__doc__ and m.description and "\n" not in m.description, name
    listed = [line.split()[0] for line in cli_analyze.list_metrics().splitlines()[1:]]
    assert [n for n in listed if n in METRICS] == list(METRICS)


def test_docs_table_is_the_registry_table():
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("\n", text.index("<!-- metric-table:")) + 1
    end = text.index("<!-- /metric-table -->")
    assert text[start:end] == metrics.metric_table_markdown(), (
        "docs/metrics.md is out of date: paste metric_table_markdown() between the markers"
    )
    for q in metrics.QUANTITIES:
        assert f"`{q}`" in text, q


def test_aggregate_rules_unchanged():
    df = analyze(_maskset())
    net = aggregate(df)
    assert net["n_edges"] == 12 + 4 + 20 and net["density"] == pytest.approx(36 / (30 + 20))
    assert net["deg_out_mean"] == pytest.approx(36 / (5 + 4))
    flags = df["is_ramanujan"].dropna().astype(bool)
    # the network's fraction of Ramanujan layers has its own name: one meaning per column name
    assert net["ramanujan_fraction"] == pytest.approx(float(flags.mean()))
    assert "is_ramanujan" not in net
    assert net["level"] == "network" and net["layer"] == "(network)"
    extra = df.assign(val_acc=[0.5, np.nan])  # a column no metric owns: the mean
    assert aggregate(extra)["val_acc"] == 0.5
    assert aggregate(extra, invalid="zero")["val_acc"] == 0.25
