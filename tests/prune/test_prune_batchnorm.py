"""``masktopo prune`` on a BatchNorm model from a plain checkpoint (the issue's ResNet-20 / CIFAR-10
command, on small CIFAR-10 files in the distributed format), and the BatchNorm re-estimation."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from _files import cifar10_dir
from torch import nn

from cli.main import main
from masktopo.pai.densities import keep_count
from masktopo.prune import RESULTS_FILE
from masktopo.prune.bn import reestimate_bn
from masktopo.runs import read_run
from masktopo.seeding import generator
from masktopo.zoo import get_model, get_spec, maskable_parameters


def test_reestimate_bn_gives_the_exact_batch_statistics():
    """After one pass the running mean and (unbiased) variance are those of all the inputs seen,
    whatever the momentum and the statistics were before; the mode is restored."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3))
    net[1].running_mean.fill_(5.0)
    net.eval()
    x = torch.randn(40, 3, generator=g)
    assert reestimate_bn(net, [x[:16], x[16:32], x[32:]]) == 40
    h = net[0](x).detach()
    # the cumulative average of per-batch statistics: batches of 16, 16 and 8
    means = torch.stack([h[:16].mean(0), h[16:32].mean(0), h[32:].mean(0)])
    vars_ = torch.stack([h[:16].var(0), h[16:32].var(0), h[32:].var(0)])
    torch.testing.assert_close(net[1].running_mean, means.mean(0))
    torch.testing.assert_close(net[1].running_var, vars_.mean(0))
    assert not net.training and net[1].momentum == 0.3
    assert reestimate_bn(nn.Linear(2, 2), [x[:, :2]]) == 0  # no BatchNorm: nothing to do


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    cifar10_dir(root / "cifar-10-batches-py", n=12)  # 60 training and 12 test images
    return root


def test_prune_a_resnet20_checkpoint_with_batchnorm(cifar, tmp_path, capsys):
    model = get_model("resnet20", dataset=get_spec("cifar10"), generator=generator(0, "model"))
    ckpt = tmp_path / "resnet20.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "pruned"
    rc = main(["prune", str(ckpt), "--model", "resnet20", "--dataset", "cifar10", "--data-dir",
               str(cifar), "--method", "mp,bso-block", "--sparsity", "0.9", "--block-size", "500",
               "--fisher-samples", "16", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "--block-size" not in capsys.readouterr().err  # bso-block uses it
    rows = list(csv.DictReader((out / RESULTS_FILE).open()))
    assert [r["method"] for r in rows] == ["mp", "bso-block"]
    p = sum(t.numel() for t in maskable_parameters(model).values())
    run = read_run(out)
    for r in rows:
        acc, acc_bn = float(r["test_acc"]), float(r["test_acc_bn"])  # a BatchNorm model: both
        assert 0.0 <= acc <= 1.0 and 0.0 <= acc_bn <= 1.0
        assert math.isfinite(float(r["objective"]))
        ms = run.load(int(r["event"]))
        assert ms.nnz() == keep_count(0.1, p) == int(r["kept"])
    # bso-block re-fits the kept weights of MP's support: same masks, lower quadratic model
    mp, block = (run.load(int(r["event"])) for r in rows)
    assert mp.equal(block, weights=False)
    assert float(rows[1]["objective"]) <= float(rows[0]["objective"])
