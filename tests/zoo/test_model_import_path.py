"""A model of one's own by import path ``module.path:callable``: ``get_model``, the option's
validation, the trainer and the command line (docs/zoo.md, "Your own model by import path")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.options import SetupOptions, check_value, is_import_path
from masktopo.zoo import get_model

ROOT = Path(__file__).resolve().parents[2]
KNOWN = (
    "known: lenet300, lenet5, mlp, mlpnet, resnet18, resnet20, resnet34, resnet50, smallcnn, "
    "spiral-mlp, vgg16, vgg19, or module.path:callable"
)

_NETS = """
import math

from torch import nn

CALLS = []


def make_net(num_classes, in_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 16), nn.ReLU(),
                         nn.Linear(16, num_classes))


def no_args():
    return nn.Linear(2, 3)


def kw_only(**kwargs):
    CALLS.append(dict(kwargs))
    return nn.Linear(kwargs["in_shape"][0], kwargs["num_classes"])


def classes_only(num_classes):
    return nn.Linear(2, num_classes)


def with_width(*, num_classes=1, in_shape=(2,), width=8):
    return nn.Sequential(nn.Linear(in_shape[0], width), nn.ReLU(), nn.Linear(width, num_classes))


def needs_depth(num_classes, in_shape, depth):
    return nn.Linear(in_shape[0], num_classes)


class Net(nn.Module):
    def __init__(self, num_classes, in_shape):
        super().__init__()
        self.fc = nn.Linear(math.prod(in_shape), num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Factory:
    @staticmethod
    def small(num_classes, in_shape):
        return nn.Linear(math.prod(in_shape), num_classes)


VALUE = 3


def make_dict(num_classes):
    return {"fc": nn.Linear(2, num_classes)}


def make_none():
    return None
"""

_MODULES = ("mynets", "brokennets", "importsmissing")


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """``mynets`` (and two modules that fail to import) in ``tmp_path``, on ``sys.path``."""
    (tmp_path / "mynets.py").write_text(_NETS)
    (tmp_path / "brokennets.py").write_text('raise RuntimeError("boom\\n  second line")\n')
    (tmp_path / "importsmissing.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in _MODULES:
        sys.modules.pop(name, None)
    yield tmp_path
    for name in _MODULES:
        sys.modules.pop(name, None)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- the spelling ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["mynets:make_net", "mypkg.models:make_net", "a.b.c:Factory.small", "_x:_y", "m:f1"]
)
def test_well_formed_import_paths(path):
    assert is_import_path(path)
    assert check_value(SetupOptions, "model", path) == path


MALFORMED = [
    "mynets",
    "my-nets:make_net",
    "mynets:make-net",
    "mynets:make_net:x",
    "mynets:",
    ":make_net",
    "1nets:make_net",
    "mynets:make net",
    "mynets.:make_net",
    "mynets:.make_net",
    "class:make_net",
    "mynets:make_net()",
    "mynets::make_net",
]


@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_import_path_is_an_unknown_name(path):
    assert not is_import_path(path)
    with pytest.raises(UnknownNameError) as e:
        check_value(SetupOptions, "model", path, where="--model")
    assert str(e.value) == f"--model: unknown model {path!r}; {KNOWN}"
    with pytest.raises(UnknownNameError) as e:
        get_model(path, dataset="mnist")
    assert str(e.value) == f"unknown model {path!r}; {KNOWN}"


def test_zoo_names_still_pass_and_other_options_keep_their_message():
    assert check_value(SetupOptions, "model", "lenet300") == "lenet300"
    assert not is_import_path("lenet300") and not is_import_path(None)
    with pytest.raises(UnknownNameError) as e:
        check_value(SetupOptions, "dataset", "mynets:make_net")
    assert str(e.value).startswith("unknown dataset 'mynets:make_net'; known: ")
    assert "module.path" not in str(e.value)


def test_train_and_pags_configs_take_an_import_path():
    from masktopo.pags.config import PagsConfig
    from masktopo.trainer.config import TrainConfig, resolve

    assert resolve(TrainConfig(model="mynets:make_net")).model == "mynets:make_net"
    assert PagsConfig(model="mynets:make_net", dataset="mnist", density=0.1).model == (
        "mynets:make_net"
    )
    with pytest.raises(UnknownNameError) as e:
        resolve(TrainConfig(model="mynets:make_net:x"))
    assert str(e.value) == f"unknown model 'mynets:make_net:x'; {KNOWN}"


# -- building ----------------------------------------------------------------------------------------
def test_get_model_by_path_has_the_dataset_shapes(nets):
    model = get_model("mynets:make_net", dataset="mnist", generator=_gen())
    assert isinstance(model, nn.Sequential)
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)
    spiral = get_model("mynets:make_net", dataset="cubist-spiral")
    assert spiral(torch.zeros(3, 2)).shape == (3, 1)  # one BCE logit
    given = get_model("mynets:make_net", num_classes=7, in_shape=[3, 4])
    assert given(torch.zeros(2, 3, 4)).shape == (2, 7)


@pytest.fixture
def own_rng():
    """The test may reseed PyTorch's global RNG: its state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        yield


def test_get_model_by_path_is_deterministic_and_keeps_the_global_rng(nets, own_rng):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = get_model("mynets:make_net", dataset="mnist", generator=_gen(5))
    b = get_model("mynets:make_net", dataset="mnist", generator=_gen(5))
    c = get_model("mynets:make_net", dataset="mnist", generator=_gen(6))
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(a, b)
    assert not _same(a, c)
    # no generator: a generator seeded with 0, as for the zoo models
    default = get_model("mynets:make_net", dataset="mnist")
    assert _same(default, get_model("mynets:make_net", dataset="mnist", generator=_gen(0)))
    # the global RNG's state does not change the result
    torch.manual_seed(99)
    assert _same(get_model("mynets:make_net", dataset="mnist", generator=_gen(5)), a)


def test_the_seed_is_drawn_from_the_generator(nets, own_rng):
    g = _gen(3)
    seed = int(torch.randint(2**62, (), generator=_gen(3)))
    model = get_model("mynets:make_net", dataset="cubist-spiral", generator=g)
    import mynets

    torch.manual_seed(seed)  # what the callable runs under
    assert _same(model, mynets.make_net(1, (2,)))
    # the generator advanced: the next model differs
    assert not _same(model, get_model("mynets:make_net", dataset="cubist-spiral", generator=g))


def test_signature_conventions(nets):
    import mynets

    assert isinstance(get_model("mynets:no_args", dataset="mnist"), nn.Linear)
    model = get_model("mynets:kw_only", dataset="cubist-spiral")
    assert mynets.CALLS == [{"num_classes": 1, "in_shape": (2,)}]
    assert (model.in_features, model.out_features) == (2, 1)
    get_model("mynets:kw_only", dataset="cubist-spiral", extra=3)
    assert mynets.CALLS[-1] == {"num_classes": 1, "in_shape": (2,), "extra": 3}
    assert get_model("mynets:classes_only", dataset="mnist").out_features == 10
    wide = get_model("mynets:with_width", dataset="cubist-spiral", width=5)
    assert wide[0].out_features == 5
    default = get_model("mynets:with_width")  # nothing known: the callable's own defaults
    assert (default[0].in_features, default[0].out_features, default[2].out_features) == (2, 8, 1)
    net = get_model("mynets:Net", dataset="mnist")
    assert isinstance(net, mynets.Net) and net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    small = get_model("mynets:Factory.small", num_classes=4, in_shape=(6,))
    assert (small.in_features, small.out_features) == (6, 4)


# -- errors: one line each ---------------------------------------------------------------------------
ERRORS = [
    (
        dict(name="nosuchmodule_xyz:make_net"),
        "model 'nosuchmodule_xyz:make_net': cannot import module 'nosuchmodule_xyz' "
        "(ModuleNotFoundError: No module named 'nosuchmodule_xyz'); is its folder on PYTHONPATH?",
    ),
    (
        dict(name="mynets.sub:make_net"),
        "model 'mynets.sub:make_net': cannot import module 'mynets.sub' (ModuleNotFoundError: "
        "No module named 'mynets.sub'; 'mynets' is not a package)",
    ),
    (
        dict(name="brokennets:make_net"),
        "model 'brokennets:make_net': cannot import module 'brokennets' (RuntimeError: boom "
        "second line)",
    ),
    (
        dict(name="importsmissing:make_net"),
        "model 'importsmissing:make_net': cannot import module 'importsmissing' "
        "(ModuleNotFoundError: No module named 'no_such_dependency_xyz')",
    ),
    (dict(name="mynets:nope"), "model 'mynets:nope': mynets has no attribute 'nope'"),
    (
        dict(name="mynets:Factory.big"),
        "model 'mynets:Factory.big': mynets.Factory has no attribute 'big'",
    ),
    (dict(name="mynets:VALUE"), "model 'mynets:VALUE': mynets.VALUE is not callable (it is int)"),
    (
        dict(name="mynets:make_dict", dataset="mnist"),
        "model 'mynets:make_dict' returned dict, not a torch.nn.Module",
    ),
    (
        dict(name="mynets:make_none"),
        "model 'mynets:make_none' returned None, not a torch.nn.Module",
    ),
    (
        dict(name="mynets:make_net"),
        "model 'mynets:make_net' cannot be called with no arguments: missing a required "
        "argument: 'num_classes'",
    ),
    (
        dict(name="mynets:needs_depth", dataset="mnist"),
        "model 'mynets:needs_depth' cannot be called with num_classes, in_shape: missing a "
        "required argument: 'depth'",
    ),
    (
        dict(name="mynets:make_net", dataset="mnist", width=3),
        "model 'mynets:make_net' has no option 'width'; it takes no options",
    ),
    (
        dict(name="mynets:with_width", depth=3),
        "model 'mynets:with_width' has no option 'depth'; options: width",
    ),
    (
        dict(name="mynets:make_net", num_classes=0, in_shape=(2,)),
        "num_classes must be a positive integer, got 0",
    ),
    (
        dict(name="mynets:make_net", num_classes=2, in_shape=(0, 3)),
        "model 'mynets:make_net': in_shape must have positive sizes, got (0, 3)",
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), ERRORS)
def test_errors_are_one_line(nets, kwargs, message):
    kwargs = dict(kwargs)
    state = torch.get_rng_state()
    with pytest.raises(MaskValidationError) as e:
        get_model(kwargs.pop("name"), **kwargs)
    assert str(e.value) == message
    assert "\n" not in str(e.value)
    assert e.value.__cause__ is None  # no chained traceback either
    assert e.value.__context__ is None or e.value.__suppress_context__
    assert torch.equal(torch.get_rng_state(), state)


def test_an_error_raised_by_the_callable_is_its_own(nets):
    (nets / "raising.py").write_text("def make(num_classes):\n    raise KeyError('mine')\n")
    try:
        with pytest.raises(KeyError, match="mine"):
            get_model("raising:make", num_classes=3)
    finally:
        sys.modules.pop("raising", None)


# -- the trainer and the command line ----------------------------------------------------------------
def test_train_a_model_by_import_path(nets, tmp_path):
    from masktopo.trainer import TrainConfig, train

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(model="mynets:make_net", dataset="cubist-spiral", method="rigl",
                          epochs=1, max_steps=5, device="cpu", density=0.3)  # fmt: skip
        result = train(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(old)
    assert result.steps == 5
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["model"] == "mynets:make_net"
    assert run["config"]["method"] == "rigl"


def _env(*paths) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    env["MASKTOPO_WORKERS"] = "1"
    return env


def test_cli_trains_a_model_by_import_path(nets, tmp_path):
    out = tmp_path / "cli-run"
    cmd = [sys.executable, "-m", "masktopo", "train", "--model", "mynets:make_net", "--dataset",
           "cubist-spiral", "--method", "static", "--epochs", "1", "--max-steps", "5",
           "--device", "cpu", "--out", str(out)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(ROOT, nets), cwd=tmp_path,
                       timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["model"] == "mynets:make_net"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("my-nets:make_net", f"--model: unknown model 'my-nets:make_net'; {KNOWN}"),
        ("mynets:nope", "model 'mynets:nope': mynets has no attribute 'nope'"),
    ],
)
def test_cli_bad_import_path_is_one_line_and_writes_nothing(nets, tmp_path, model, message):
    out = tmp_path / "bad-run"
    cmd = [sys.executable, "-m", "masktopo", "train", "--model", model, "--dataset",
           "cubist-spiral", "--max-steps", "5", "--device", "cpu", "--out", str(out)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(ROOT, nets), cwd=tmp_path,
                       timeout=300)  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.strip() == f"masktopo: error: {message}"
    assert "Traceback" not in p.stderr
    assert not out.exists()
