"""``masktopo plot PRUNED``: a prune run is drawn against the sparsity, one line per method."""

from __future__ import annotations

import pytest
from _data import skip_without_fmnist
from matplotlib.image import imread

from masktopo.cli.main import main
from masktopo.trainer.config import TrainConfig
from masktopo.trainer.loop import train


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    skip_without_fmnist()
    base = tmp_path_factory.mktemp("prune_plots")
    cfg = TrainConfig(method="dense", density=1.0, model="mlpnet", dataset="fashion-mnist",
                      epochs=1, max_steps=60, device="cpu")  # fmt: skip
    train(cfg, base / "dense")
    assert main(["prune", str(base / "dense"), "--method", "mp,bso", "--sparsity", "0.5,0.9",
                 "--fisher-samples", "32", "--out", str(base / "p")]) == 0  # fmt: skip
    return base / "p"


def test_plot_of_a_prune_run_draws_accuracy_and_objective_against_sparsity(pruned, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    import matplotlib.axes

    drawn = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):  # what each line holds
        drawn.append((self.get_ylabel(), kwargs.get("label"), list(args[0]), list(args[1])))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    assert main(["plot", str(pruned), "--out", str(tmp_path / "f"), "--format", "png,svg"]) == 0
    names = sorted(f.name for f in (tmp_path / "f").iterdir())
    assert names == ["prune-accuracy.png", "prune-accuracy.svg", "prune-objective.png",
                     "prune-objective.svg"]  # fmt: skip
    assert imread(tmp_path / "f" / "prune-accuracy.png").shape[0] > 100
    lines = {label: (x, y) for _, label, x, y in drawn}
    assert set(lines) == {"mp", "bso"} and lines["mp"][0] == [0.5, 0.9]  # by sparsity


def test_plot_of_a_prune_run_without_its_table_is_one_line(pruned, tmp_path, capsys):
    import shutil

    broken = tmp_path / "p"
    shutil.copytree(pruned, broken)
    (broken / "results.csv").unlink()
    assert main(["plot", str(broken), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "holds no results.csv yet" in err and not (tmp_path / "g").exists()


def test_report_of_a_prune_run_shows_its_figures_not_a_trajectory(pruned):
    from masktopo.report import build_report

    page = build_report(pruned)
    assert "<h3>One-shot pruning: every method against the sparsity</h3>" in page
    assert "prune accuracy" in page and "prune objective" in page
    assert "Topology over training" not in page
