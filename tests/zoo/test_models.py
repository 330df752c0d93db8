"""The model zoo: builds, shapes, parameter names and counts, deterministic init, maskable weights."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from masktopo import examples
from masktopo.errors import MaskValidationError, UnknownNameError
from masktopo.zoo import DATASET_NAMES, MODEL_NAMES, get_model, maskable_parameters
from masktopo.zoo.datasets import DATASETS
from masktopo.zoo.models import MODELS


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _count(model):
    return sum(p.numel() for p in model.parameters())


# Small inputs keep the forward passes fast (resnet50 takes any size >= 32).
_FORWARD = {
    "resnet18": (3, 32, 32),
    "resnet34": (3, 32, 32),
    "resnet20": (3, 32, 32),
    "resnet50": (3, 32, 32),
    "vgg16": (3, 32, 32),
    "vgg19": (3, 32, 32),
    "lenet5": (1, 28, 28),
    "lenet300": (1, 28, 28),
    "mlpnet": (1, 28, 28),
    "spiral-mlp": (2,),
    "mlp": (40,),
    "smallcnn": (1, 28, 28),
}


def test_registry_names_match_the_cheap_lists():
    assert tuple(MODELS) == MODEL_NAMES == tuple(_FORWARD)
    assert tuple(DATASETS) == DATASET_NAMES


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_and_runs(name):
    in_shape = _FORWARD[name]
    model = get_model(name, num_classes=7, in_shape=in_shape, generator=_gen())
    model.eval()
    with torch.no_grad():
        out = model(torch.randn((2, *in_shape), generator=_gen(1)))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_resnet18_cifar_matches_examples_shapes_and_count():
    model = get_model("resnet18")
    # kuangliu/pytorch-cifar's ResNet18() for 10 classes.
    assert _count(model) == 11_173_962
    shapes = {n: tuple(p.shape) for n, p in maskable_parameters(model).items()}
    ref = examples.resnet18_cifar_shapes()
    assert list(shapes.items()) == list(ref.items())
    names = [n for n, _ in model.named_parameters()]
    assert "layer2.0.shortcut.1.weight" in names and "linear.bias" in names
    assert not any("maxpool" in n for n, _ in model.named_modules())


def test_resnet50_matches_torchvision_names_and_count():
    model = get_model("resnet50")
    assert _count(model) == 25_557_032  # torchvision.models.resnet50()
    shapes = {n: tuple(p.shape) for n, p in maskable_parameters(model).items()}
    assert list(shapes.items()) == list(examples.resnet50_imagenet_shapes().items())
    assert isinstance(model.maxpool, nn.MaxPool2d)
    # v1.5: the stride of a downsampling block is on the 3x3 conv2, not on conv1.
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert "layer3.0.downsample.1.running_var" in dict(model.named_buffers())


def test_resnet34_and_resnet20_layouts():
    r34 = get_model("resnet34")
    assert _count(r34) == 21_282_122
    assert [len(getattr(r34, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    r20 = get_model("resnet20")
    w = maskable_parameters(r20)
    assert len(w) == 22  # stem + 18 block convs + 2 option-B shortcuts + classifier
    assert w["conv1.weight"].shape == (16, 3, 3, 3)
    assert w["layer2.0.shortcut.0.weight"].shape == (32, 16, 1, 1)
    assert w["layer3.0.shortcut.0.weight"].shape == (64, 32, 1, 1)
    assert w["linear.weight"].shape == (10, 64)
    assert not hasattr(r20, "layer4")
    # 0.27M parameters: 269,722 with option-A (zero-pad) shortcuts + 2,752 for the 1x1 conv-BNs.
    assert _count(r20) == 269_722 + 16 * 32 + 32 * 64 + 2 * (32 + 64)


@pytest.mark.parametrize(("name", "convs"), [("vgg16", 13), ("vgg19", 16)])
def test_vgg_cifar_variant(name, convs):
    model = get_model(name, num_classes=100)
    w = maskable_parameters(model)
    assert len(w) == convs + 1
    assert list(w)[-1] == "classifier.weight" and w["classifier.weight"].shape == (100, 512)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == convs
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_small_models_layouts():
    lenet5 = get_model("lenet5")
    assert {n: tuple(p.shape) for n, p in maskable_parameters(lenet5).items()} == {
        "conv1.weight": (6, 1, 5, 5),
        "conv2.weight": (16, 6, 5, 5),
        "fc1.weight": (120, 400),
        "fc2.weight": (84, 120),
        "fc3.weight": (10, 84),
    }
    assert _count(lenet5) == 61_706
    assert get_model("lenet5", in_shape=(3, 32, 32)).fc1.in_features == 16 * 6 * 6
    lenet300 = get_model("lenet300")
    assert [tuple(p.shape) for p in maskable_parameters(lenet300).values()] == [
        (300, 784),
        (100, 300),
        (10, 100),
    ]
    mlpnet = get_model("mlpnet")
    assert [n for n, _ in mlpnet.named_parameters()] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert _count(mlpnet) == 784 * 40 + 40 * 20 + 20 * 10 == 32_360


@pytest.mark.parametrize("width", [3, 16])
def test_spiral_mlp(width):
    model = get_model("spiral-mlp", dataset="cubist-spiral", width=width)
    w = maskable_parameters(model)
    assert list(w) == [f"{k}.weight" for k in ("first_layer", "second_layer", "third_layer", "clf")]
    assert sum(p.numel() for p in w.values()) == 2 * width + 2 * width**2 + width
    assert model.clf.out_features == 1
    assert all(getattr(model, k).bias is not None for k in ("first_layer", "clf"))


def test_in_shape_sets_input_channels_and_size():
    model = get_model("resnet18", dataset="fashion-mnist")
    assert model.conv1.weight.shape == (64, 1, 3, 3)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert get_model("resnet20", dataset="cifar100").linear.out_features == 100
    assert get_model("resnet50", dataset="tiny-imagenet").fc.weight.shape == (200, 2048)
    assert get_model("lenet300", in_shape=(3, 32, 32)).fc1.in_features == 3072
    # explicit arguments win over the dataset's
    assert get_model("vgg16", dataset="cifar100", num_classes=5).classifier.out_features == 5


def test_init_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = get_model("resnet20", generator=_gen(5)).state_dict()
    b = get_model("resnet20", generator=_gen(5)).state_dict()
    c = get_model("resnet20", generator=_gen(6)).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    d = get_model("resnet20").state_dict()  # no generator: seed 0, still deterministic
    assert torch.equal(d["conv1.weight"], get_model("resnet20", generator=_gen(0)).conv1.weight)


def test_default_init_matches_pytorch_modules_under_the_same_seed():
    model = get_model("lenet300", generator=_gen(123))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        ref = [nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)]
    for ours, theirs in zip((model.fc1, model.fc2, model.fc3), ref, strict=True):
        assert torch.equal(ours.weight, theirs.weight)
        assert torch.equal(ours.bias, theirs.bias)


def test_batchnorm_state_is_initialised():
    model = get_model("resnet50")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
            assert int(m.num_batches_tracked) == 0


def test_init_schemes_have_the_reference_scale():
    # torchvision ResNet: Kaiming-normal, fan-out, gain sqrt(2).
    w = get_model("resnet50").layer3[0].conv2.weight  # 256 x 256 x 3 x 3, fan_out 2304
    assert w.std().item() == pytest.approx(math.sqrt(2 / 2304), rel=0.02)
    # VGG: Kaiming-normal, fan-in; the classifier bias zero.
    vgg = get_model("vgg16")
    w = vgg.features[-3].weight  # the last conv, 512 x 512 x 3 x 3, fan_in 4608
    assert w.std().item() == pytest.approx(math.sqrt(2 / 4608), rel=0.02)
    assert torch.count_nonzero(vgg.classifier.bias) == 0
    # kuangliu ResNet-18: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    w = get_model("resnet18").layer4[1].conv2.weight
    assert w.abs().max().item() <= 1 / math.sqrt(512 * 9)
    assert w.std().item() == pytest.approx(1 / math.sqrt(3 * 512 * 9), rel=0.02)


def test_maskable_parameters_first_and_last_dense():
    model = get_model("lenet5")
    every = maskable_parameters(model)
    names = list(every)
    assert names == [n for n, _ in model.named_parameters() if n.endswith("weight")]
    assert every["conv1.weight"] is model.conv1.weight  # the parameter itself
    assert list(maskable_parameters(model, first_dense=True)) == names[1:]
    assert list(maskable_parameters(model, last_dense=True)) == names[:-1]
    assert list(maskable_parameters(model, first_dense=True, last_dense=True)) == names[1:-1]
    one = nn.Sequential(nn.Linear(3, 2))
    assert maskable_parameters(one, first_dense=True, last_dense=True) == {}


def test_maskable_parameters_skip_bias_and_batchnorm():
    model = get_model("resnet18")
    w = maskable_parameters(model)
    assert not any(n.endswith("bias") or ".bn" in n or "shortcut.1" in n for n in w)
    assert all(p.dim() in (2, 4) for p in w.values())
    assert list(maskable_parameters(model, first_dense=True, last_dense=True)) == list(w)[1:-1]


def test_bad_arguments():
    with pytest.raises(UnknownNameError, match="known: lenet300, lenet5, mlp, mlpnet, resnet18"):
        get_model("resnet19")
    with pytest.raises(UnknownNameError, match="unknown dataset"):
        get_model("resnet18", dataset="cifar11")
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(MaskValidationError, match="num_classes"):
            get_model("lenet300", num_classes=bad)
    with pytest.raises(MaskValidationError, match=r"needs an image input shape"):
        get_model("resnet18", dataset="cubist-spiral")
    with pytest.raises(MaskValidationError, match="positive sizes"):
        get_model("mlpnet", in_shape=(0, 28))
    with pytest.raises(MaskValidationError, match="at least 10x10"):
        get_model("lenet5", in_shape=(1, 8, 8))
    with pytest.raises(MaskValidationError, match="no option 'width'; it takes no options"):
        get_model("resnet18", width=3)
    with pytest.raises(MaskValidationError, match="width must be a positive integer"):
        get_model("spiral-mlp", width=0)
    with pytest.raises(MaskValidationError, match="mlp: width must be a positive integer"):
        get_model("mlp", width=True)


def test_e2_models_have_the_stated_sizes():
    """MLP 784-100-100-10 and the small CNN (conv 32-64, fc 128) of methods-spec §8 E2."""
    mlp = get_model("mlp", dataset="fashion-mnist")
    assert [tuple(p.shape) for p in maskable_parameters(mlp).values()] == [
        (100, 784), (100, 100), (10, 100)]  # fmt: skip
    assert _count(mlp) == 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert [
        tuple(p.shape)
        for p in maskable_parameters(get_model("mlp", dataset="mnist1d", width=7)).values()
    ] == [(7, 40), (7, 7), (10, 7)]
    cnn = get_model("smallcnn", dataset="fashion-mnist")
    assert [tuple(p.shape) for p in maskable_parameters(cnn).values()] == [
        (32, 1, 3, 3), (64, 32, 3, 3), (128, 64 * 7 * 7), (10, 128)]  # fmt: skip


def test_names_are_available_without_torch():
    code = (
        "import sys, masktopo.zoo as z; assert len(z.MODEL_NAMES) == 12; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_materialize_gives_cpu_storage_and_keeps_shared_tensors():
    """The meta-device model gets real CPU tensors of the same shapes, dtypes and gradient
    flags (what Module.to_empty gives); a tensor two modules share stays one tensor."""
    from torch import nn

    from masktopo.zoo.models import _materialize

    with torch.device("meta"):
        a, b = nn.Linear(3, 4), nn.Linear(3, 4)
        b.weight = a.weight  # tied
        bn = nn.BatchNorm1d(4)
        bn.bias.requires_grad_(False)
        net = nn.Sequential(a, b, bn)
    ref = {k: (v.shape, v.dtype) for k, v in net.state_dict(keep_vars=True).items()}
    _materialize(net)
    state = net.state_dict(keep_vars=True)
    assert {k: (v.shape, v.dtype) for k, v in state.items()} == ref
    assert all(v.device.type == "cpu" for v in state.values())
    assert net[0].weight is net[1].weight and isinstance(net[0].weight, nn.Parameter)
    assert state["2.num_batches_tracked"].dtype == torch.long
    assert not net[2].bias.requires_grad and net[2].weight.requires_grad
