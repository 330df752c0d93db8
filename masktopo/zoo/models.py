"""The model zoo: the networks of the sparse-training literature, in plain PyTorch.

Every builder takes ``num_classes`` (the number of output units) and ``in_shape`` (one sample's
shape, ``(C, H, W)`` for images or ``(D,)`` for vectors) and returns an ``nn.Module`` whose
parameter names follow the reference code the literature trains, so that masks and checkpoints
carry over by name:

=============  ========================================  =================================
name           architecture                              source layout and names
=============  ========================================  =================================
resnet18       CIFAR ResNet-18 (BasicBlock, 2-2-2-2)      kuangliu/pytorch-cifar (ITOP, GraNet)
resnet34       CIFAR ResNet-34 (BasicBlock, 3-4-6-3)      kuangliu/pytorch-cifar
resnet20       CIFAR ResNet-20 (3 stages 16/32/64)        He et al. 2016 §4.2, option-B shortcuts
resnet50       ImageNet ResNet-50 (Bottleneck v1.5)       torchvision ``resnet50``
vgg16, vgg19   CIFAR VGG with BN, one linear classifier   Network Slimming / GraSP / SynFlow
lenet5         conv 6-16, fc 120-84                       LeCun et al. 1998 (ReLU, max-pool)
lenet300       MLP 300-100                                LeCun et al. 1998; Han et al. 2015
mlpnet         MLP 784-40-20-10, no bias                  CHITA / WoodFisher ``MlpNet``
spiral-mlp     MLP 2-w-w-w-1 with biases (w = 16)         stephenqz/sparsest ``FourLayerModel``
mlp            MLP in-w-w-out with biases (w = 100)      GraNet/ITOP small checks; MNIST-1D
smallcnn       conv 32-64, fc 128, with biases           methods-spec §8 E2 ("conv 32-64 + FC")
=============  ========================================  =================================

Initialisation never touches PyTorch's global random state: a model is built on the ``meta``
device, materialised, and every weight is drawn from the ``torch.Generator`` passed to
:func:`get_model` (a generator seeded with 0 when none is given), following each reference's own
scheme (see ``_INIT``). The same generator state gives the same model.

Examples
--------
>>> import torch
>>> from masktopo.zoo import get_model, maskable_parameters
>>> model = get_model("resnet18", num_classes=10, generator=torch.Generator().manual_seed(0))
>>> model(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> list(maskable_parameters(model))[:2]
['conv1.weight', 'layer1.0.conv1.weight']
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import is_int
from ..errors import MaskValidationError, UnknownNameError, one_line
from ..maskable import MASKABLE_TYPES, find_maskable
from ..options import is_import_path

__all__ = [
    "MASKABLE_TYPES",
    "MLP",
    "MODELS",
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ImageNetResNet",
    "LeNet5",
    "LeNet300",
    "MLPNet",
    "SmallCNN",
    "SpiralMLP",
    "check_model_options",
    "get_model",
    "maskable_parameters",
]


# -- argument checks --------------------------------------------------------------------------------
def _check_classes(num_classes) -> int:
    if not is_int(num_classes) or num_classes < 1:
        raise MaskValidationError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def _check_shape(in_shape, *, image: bool, model: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in in_shape)
    except (TypeError, ValueError):
        raise MaskValidationError(
            f"{model}: in_shape must be a tuple of sizes, got {in_shape!r}"
        ) from None
    if not shape or any(s < 1 for s in shape):
        raise MaskValidationError(f"{model}: in_shape must have positive sizes, got {shape}")
    if image and len(shape) != 3:
        raise MaskValidationError(
            f"{model} needs an image input shape (C, H, W), got {shape}; "
            "it cannot take vector data such as cubist-spiral"
        )
    return shape


# -- CIFAR ResNets (kuangliu layout) ----------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual; a 1x1 conv-BN ``shortcut`` when the shape changes.

    This is the option-B (projection) shortcut of He et al. (2016), as in kuangliu/pytorch-cifar:
    ``shortcut.0`` is the 1x1 convolution, ``shortcut.1`` its BatchNorm; an identity shortcut is an
    empty ``nn.Sequential`` and has no parameters.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem without max-pool, BasicBlock stages, global average pool.

    Parameters
    ----------
    blocks : sequence of int
        Blocks per stage (``(2, 2, 2, 2)`` for ResNet-18, ``(3, 3, 3)`` for ResNet-20).
    widths : sequence of int
        Channels per stage; the stem has ``widths[0]`` channels. Stage ``i > 0`` starts with
        stride 2.
    num_classes : int
        Outputs of the ``linear`` classifier.
    in_channels : int
        Input channels (3 for CIFAR, 1 for Fashion-MNIST).
    """

    def __init__(self, blocks, widths, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for stage, (n, planes) in enumerate(zip(blocks, widths, strict=True), start=1):
            layers = []
            for b in range(n):
                stride = 2 if (b == 0 and stage > 1) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.num_stages + 1):
            out = getattr(self, f"layer{stage}")(out)
        # kuangliu uses avg_pool2d(out, 4), which equals a global pool on 32x32 inputs.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# -- ImageNet ResNet-50 (torchvision layout) --------------------------------------------------------
class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride sits on the 3x3 ``conv2``), expansion 4."""

    expansion = 4

    def __init__(self, in_planes: int, width: int, stride: int = 1, downsample=None):
        super().__init__()
        out_planes = width * self.expansion
        self.conv1 = nn.Conv2d(in_planes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    """torchvision's ImageNet ResNet with Bottleneck blocks (ResNet-50: ``(3, 4, 6, 3)``).

    7x7 stride-2 stem ``conv1``, ``bn1``, 3x3 stride-2 ``maxpool``, stages ``layer1..4`` with a
    ``downsample`` (1x1 conv ``downsample.0`` + BN ``downsample.1``) in each first block, global
    average pool, ``fc``.
    """

    def __init__(self, blocks=(3, 4, 6, 3), num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for stage, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
            stride = 1 if stage == 1 else 2
            out_planes = width * Bottleneck.expansion
            down = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
            layers = [Bottleneck(in_planes, width, stride, down)]
            layers += [Bottleneck(out_planes, width) for _ in range(n - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            in_planes = out_planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# -- VGG with BatchNorm (CIFAR variant) -------------------------------------------------------------
_VGG_CFG = {
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512),
    ),
}


class VGG(nn.Module):
    """The CIFAR VGG-16/19 with BatchNorm of Network Slimming, GraSP and SynFlow.

    ``features``: 3x3 conv (no bias) - BN - ReLU blocks with 2x2 max-pools after stages 1-4 (the
    last stage is not pooled); then a global average pool (on 32x32 inputs the reference's
    ``AvgPool2d(2)``) and a single ``classifier`` ``Linear(512, num_classes)``. This is not
    torchvision's ImageNet VGG (no 4096-wide fully connected layers).
    """

    def __init__(self, depth: int = 16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in _VGG_CFG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v)]
                layers.append(nn.ReLU(inplace=True))
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


# -- small networks ---------------------------------------------------------------------------------
class LeNet5(nn.Module):
    """LeNet-5: ``conv1`` 5x5 (6, padding 2) - pool - ``conv2`` 5x5 (16) - pool - ``fc1`` 120 -
    ``fc2`` 84 - ``fc3``; ReLU and 2x2 max-pool. On 1x28x28 input ``fc1`` reads 16x5x5 = 400."""

    def __init__(self, num_classes: int = 10, in_shape=(1, 28, 28)):
        super().__init__()
        c, h, w = in_shape
        fh, fw = ((h // 2) - 4) // 2, ((w // 2) - 4) // 2
        if fh < 1 or fw < 1:
            raise MaskValidationError(f"lenet5 needs inputs of at least 10x10 pixels, got {h}x{w}")
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * fh * fw, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class _MLP(nn.Module):
    """Flatten, then Linear-ReLU layers named ``names``; the last layer has no ReLU."""

    def __init__(self, sizes: Sequence[int], names: Sequence[str], *, bias: bool):
        super().__init__()
        self._names = tuple(names)
        for name, fan_in, fan_out in zip(names, sizes[:-1], sizes[1:], strict=True):
            self.add_module(name, nn.Linear(fan_in, fan_out, bias=bias))

    def forward(self, x):
        x = x.flatten(1)
        for i, name in enumerate(self._names):
            x = getattr(self, name)(x)
            if i < len(self._names) - 1:
                x = F.relu(x)
        return x


class LeNet300(_MLP):
    """LeNet-300-100: ``fc1`` (in -> 300) - ``fc2`` (300 -> 100) - ``fc3``, ReLU, with biases."""

    def __init__(self, num_classes: int = 10, in_features: int = 784):
        super().__init__((in_features, 300, 100, num_classes), ("fc1", "fc2", "fc3"), bias=True)


class MLPNet(_MLP):
    """CHITA's MLPNet 784-40-20-10 with ReLU and **no biases** (``fc1``, ``fc2``, ``fc3``).

    The reference returns ``log_softmax`` of the last layer; this returns the logits, which give
    the same cross-entropy loss and the same predictions.
    """

    def __init__(self, num_classes: int = 10, in_features: int = 784):
        super().__init__((in_features, 40, 20, num_classes), ("fc1", "fc2", "fc3"), bias=False)


class SpiralMLP(_MLP):
    """The Cubist-Spiral model of Zhang & Papyan (2024): ``FourLayerModel`` 2-w-w-w-out.

    ``first_layer``, ``second_layer``, ``third_layer`` (ReLU after each) and ``clf``, all with
    biases; one output logit for ``BCEWithLogitsLoss`` by default.
    """

    def __init__(self, num_classes: int = 1, in_features: int = 2, width: int = 16):
        _check_width(width, "spiral-mlp")
        sizes = (in_features, width, width, width, num_classes)
        names = ("first_layer", "second_layer", "third_layer", "clf")
        super().__init__(sizes, names, bias=True)


class MLP(_MLP):
    """An MLP with two hidden layers of ``width`` units (default 100): ``fc1`` (in -> w) -
    ``fc2`` (w -> w) - ``fc3``, ReLU, with biases. 784-100-100-10 on (Fashion-)MNIST, the model
    of GraNet's and ITOP's small-scale checks (methods-spec §8, E2); 40-100-100-10 on MNIST-1D,
    the MLP of Greydanus & Kobak (2024)."""

    def __init__(self, num_classes: int = 10, in_features: int = 784, width: int = 100):
        _check_width(width, "mlp")
        super().__init__((in_features, width, width, num_classes), ("fc1", "fc2", "fc3"),
                         bias=True)  # fmt: skip


class SmallCNN(nn.Module):
    """A small CNN: ``conv1`` 3x3 (32, padding 1) - pool - ``conv2`` 3x3 (64, padding 1) - pool
    - ``fc1`` 128 - ``fc2``; ReLU and 2x2 max-pool, with biases. On 1x28x28 input ``fc1`` reads
    64x7x7 = 3,136 (methods-spec §8, E2's "conv 32-64 + FC")."""

    def __init__(self, num_classes: int = 10, in_shape=(1, 28, 28)):
        super().__init__()
        c, h, w = in_shape
        fh, fw = h // 4, w // 4
        if fh < 1 or fw < 1:
            raise MaskValidationError(f"smallcnn needs inputs of at least 4x4 pixels, got {h}x{w}")
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * fh * fw, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _check_width(width, model: str) -> None:
    if not is_int(width) or width < 1:
        raise MaskValidationError(f"{model}: width must be a positive integer, got {width!r}")


# -- initialisation ---------------------------------------------------------------------------------
def _init_torch_default(module: nn.Module, g: torch.Generator) -> None:
    """PyTorch's own ``reset_parameters`` of Linear/Conv, drawn from ``g``.

    Weight: Kaiming-uniform with ``a = sqrt(5)``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); bias:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Same values as ``nn.Linear(...)`` under the same seed.
    """
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=g)
    if module.bias is not None:
        fan_in = nn.init._calculate_fan_in_and_fan_out(module.weight)[0]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound, generator=g)


def _init_he_fan_out(module: nn.Module, g: torch.Generator) -> None:
    """torchvision ResNet: convs Kaiming-normal (fan-out, ReLU gain); the classifier default."""
    if isinstance(module, nn.Linear):
        _init_torch_default(module, g)
    else:
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=g)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _init_he_fan_in(module: nn.Module, g: torch.Generator) -> None:
    """He et al. (2015) normal init, fan-in, gain sqrt(2), for convs and linears; zero biases.

    ResNet-20 (akamaster's reference ``_weights_init``; its linear bias keeps the default) and the
    PaI literature's VGG (GraSP, SynFlow).
    """
    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=g)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _init_resnet20(module: nn.Module, g: torch.Generator) -> None:
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=g)
        fan_in = module.weight.shape[1]
        nn.init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=g)
    else:
        _init_he_fan_in(module, g)


def _materialize(model: nn.Module) -> nn.Module:
    """Give every meta-device parameter and buffer of ``model`` uninitialised CPU storage of its
    shape and dtype (what ``Module.to_empty(device="cpu")`` does, without its trip through the
    meta tensors' Python dispatch: ~0.5 s for ResNet-18). A tensor shared by several modules
    stays shared."""
    memo: dict[int, torch.Tensor] = {}

    def empty(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            memo[id(t)] = torch.empty(t.shape, dtype=t.dtype)
        return memo[id(t)]

    params: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for key, p in module._parameters.items():
            if p is not None:
                if id(p) not in params:
                    params[id(p)] = nn.Parameter(empty(p), requires_grad=p.requires_grad)
                module._parameters[key] = params[id(p)]
        for key, b in module._buffers.items():
            if b is not None:
                module._buffers[key] = empty(b)
    return model


def _initialize(model: nn.Module, scheme: Callable, generator: torch.Generator) -> nn.Module:
    """Materialise a meta-device model on the CPU and initialise every tensor deterministically."""
    model = _materialize(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MASKABLE_TYPES):
                scheme(module, generator)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()  # weight 1, bias 0, running stats reset; no RNG
            elif next(module.parameters(recurse=False), None) is not None or any(
                True for _ in module.buffers(recurse=False)
            ):
                raise AssertionError(f"no initialisation rule for {type(module).__name__}")
    return model


# -- builders ---------------------------------------------------------------------------------------
def resnet18(*, num_classes: int = 10, in_shape=(3, 32, 32)) -> CifarResNet:
    """CIFAR ResNet-18 (kuangliu): 11,173,962 parameters for 10 classes on 3-channel input."""
    c = _check_shape(in_shape, image=True, model="resnet18")[0]
    return CifarResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, c)


def resnet34(*, num_classes: int = 10, in_shape=(3, 32, 32)) -> CifarResNet:
    """CIFAR ResNet-34 (kuangliu): BasicBlock stages of 3, 4, 6, 3 blocks."""
    c = _check_shape(in_shape, image=True, model="resnet34")[0]
    return CifarResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, c)


def resnet20(*, num_classes: int = 10, in_shape=(3, 32, 32)) -> CifarResNet:
    """CIFAR ResNet-20 (He et al. 2016 §4.2): 16/32/64 channels, 3 blocks each, 1x1 shortcuts."""
    c = _check_shape(in_shape, image=True, model="resnet20")[0]
    return CifarResNet((3, 3, 3), (16, 32, 64), num_classes, c)


def resnet50(*, num_classes: int = 1000, in_shape=(3, 224, 224)) -> ImageNetResNet:
    """torchvision ResNet-50: 25,557,032 parameters for 1000 classes."""
    c = _check_shape(in_shape, image=True, model="resnet50")[0]
    return ImageNetResNet((3, 4, 6, 3), num_classes, c)


def vgg16(*, num_classes: int = 10, in_shape=(3, 32, 32)) -> VGG:
    """CIFAR VGG-16 with BatchNorm and one linear classifier."""
    return VGG(16, num_classes, _check_shape(in_shape, image=True, model="vgg16")[0])


def vgg19(*, num_classes: int = 10, in_shape=(3, 32, 32)) -> VGG:
    """CIFAR VGG-19 with BatchNorm and one linear classifier."""
    return VGG(19, num_classes, _check_shape(in_shape, image=True, model="vgg19")[0])


def lenet5(*, num_classes: int = 10, in_shape=(1, 28, 28)) -> LeNet5:
    """LeNet-5 (conv 6/16, fc 120/84)."""
    return LeNet5(num_classes, _check_shape(in_shape, image=True, model="lenet5"))


def lenet300(*, num_classes: int = 10, in_shape=(1, 28, 28)) -> LeNet300:
    """LeNet-300-100 on the flattened input."""
    return LeNet300(num_classes, math.prod(_check_shape(in_shape, image=False, model="lenet300")))


def mlpnet(*, num_classes: int = 10, in_shape=(1, 28, 28)) -> MLPNet:
    """CHITA's MLPNet 784-40-20-10 without biases (input size from ``in_shape``)."""
    return MLPNet(num_classes, math.prod(_check_shape(in_shape, image=False, model="mlpnet")))


def spiral_mlp(*, num_classes: int = 1, in_shape=(2,), width: int = 16) -> SpiralMLP:
    """The Cubist-Spiral MLP 2-w-w-w-1 (one BCE logit), with biases; ``width`` w, default 16."""
    d = math.prod(_check_shape(in_shape, image=False, model="spiral-mlp"))
    return SpiralMLP(num_classes, d, width)


def mlp(*, num_classes: int = 10, in_shape=(1, 28, 28), width: int = 100) -> MLP:
    """An MLP in-w-w-out with biases on the flattened input; ``width`` w, default 100."""
    return MLP(num_classes, math.prod(_check_shape(in_shape, image=False, model="mlp")), width)


def smallcnn(*, num_classes: int = 10, in_shape=(1, 28, 28)) -> SmallCNN:
    """A small CNN (conv 32/64, fc 128)."""
    return SmallCNN(num_classes, _check_shape(in_shape, image=True, model="smallcnn"))


#: Model name -> builder ``f(*, num_classes, in_shape, **options)``, in the CLI's spelling.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet20": resnet20,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "lenet5": lenet5,
    "lenet300": lenet300,
    "mlpnet": mlpnet,
    "spiral-mlp": spiral_mlp,
    "mlp": mlp,
    "smallcnn": smallcnn,
}

#: Model name -> initialisation scheme (each reference's own).
_INIT: dict[str, Callable] = {
    "resnet18": _init_torch_default,
    "resnet34": _init_torch_default,
    "resnet20": _init_resnet20,
    "resnet50": _init_he_fan_out,
    "vgg16": _init_he_fan_in,
    "vgg19": _init_he_fan_in,
    "lenet5": _init_torch_default,
    "lenet300": _init_torch_default,
    "mlpnet": _init_torch_default,
    "spiral-mlp": _init_torch_default,
    "mlp": _init_torch_default,
    "smallcnn": _init_torch_default,
}


def check_model_options(name: str, options) -> None:
    """Raise :class:`~masktopo.errors.MaskValidationError` when the zoo model ``name`` takes
    no option of a name in ``options`` (``width`` is spiral-mlp's and mlp's); what
    :func:`get_model` checks, for callers that check a configuration before reading its data.
    Names that are not zoo models (import paths) are not checked here: their callable is."""
    if name not in MODELS:
        return
    known = [
        p
        for p in inspect.signature(MODELS[name]).parameters
        if p not in ("num_classes", "in_shape")
    ]
    for key in options:
        if key not in known:
            raise MaskValidationError(
                f"model {name!r} has no option {key!r}"
                + (f"; options: {', '.join(known)}" if known else "; it takes no options")
            )


def get_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_shape: Sequence[int] | None = None,
    dataset=None,
    generator: torch.Generator | None = None,
    **options,
) -> nn.Module:
    """Build a zoo model by name, or one's own model by import path, initialised from an explicit
    generator.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`: ``resnet18 resnet34 resnet20 resnet50 vgg16 vgg19 lenet5 lenet300
        mlpnet spiral-mlp mlp smallcnn``; or an import path ``module.path:callable`` (exactly one colon, dotted
        identifiers on both sides; see Notes).
    num_classes : int, optional
        Output units. Defaults to the dataset's ``num_outputs`` when ``dataset`` is given, else to
        the model's own default (10; 1000 for resnet50; 1 logit for spiral-mlp).
    in_shape : sequence of int, optional
        One sample's shape, ``(C, H, W)`` or ``(D,)``: sets the input channels of the convnets and
        the input size of the MLPs. Defaults like ``num_classes``.
    dataset : str or DatasetSpec, optional
        Take ``num_classes`` (as ``spec.num_outputs``: 1 for a binary BCE dataset) and
        ``in_shape`` from this dataset where they are not given.
    generator : torch.Generator, optional
        Source of every random initial value. ``None`` uses a generator seeded with 0, so the
        result is deterministic either way; PyTorch's global RNG is never used.
    **options
        Model-specific options (``width`` for spiral-mlp and mlp), passed on to an import path's callable.

    Returns
    -------
    torch.nn.Module
        A zoo model is on the CPU, float32, in training mode; an import path's model is what the
        callable returned.

    Raises
    ------
    UnknownNameError
        For an unknown model or dataset name, or a malformed import path (the message lists the
        known names, ``or module.path:callable``).
    MaskValidationError
        For an invalid ``num_classes``, ``in_shape`` or option; for an import path whose module
        cannot be imported, that lacks the attribute, whose attribute is not callable, that cannot
        be called with the arguments above, or that returns something other than an
        ``nn.Module`` (one line naming the path).

    Notes
    -----
    An import path ``module.path:callable`` (``mypkg.models:make_net``, ``nets:Zoo.small``; a
    class works too) imports ``module.path`` (it must be importable: installed, on
    ``PYTHONPATH``, or in the current folder under ``python -m masktopo``) and calls the
    attribute with keyword arguments only:

    - ``num_classes`` (int) and ``in_shape`` (one sample's shape, a tuple of int), each only
      where it is known (given, or taken from ``dataset``) and the callable's signature takes it
      (a parameter of that name, or ``**kwargs``);
    - every one of ``**options`` (an option its signature does not take is an error).

    The call runs under :func:`torch.random.fork_rng` with the global seed set to a value drawn
    from ``generator``, so that the callable may initialise with PyTorch's global RNG as usual:
    equally seeded generators give identical weights, and the global RNG state is restored
    afterwards (CUDA's too, where CUDA is initialised). The model should be built on the CPU.
    """
    if name not in MODELS:
        if is_import_path(name):
            return _model_from_path(
                name, num_classes, in_shape, dataset, generator=generator, options=options
            )
        raise _unknown_model(name)
    if dataset is not None:
        from .datasets import DatasetSpec, get_spec

        spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
        num_classes = spec.num_outputs if num_classes is None else num_classes
        in_shape = spec.in_shape if in_shape is None else in_shape
    builder = MODELS[name]
    check_model_options(name, options)
    kwargs = dict(options)
    if num_classes is not None:
        kwargs["num_classes"] = _check_classes(num_classes)
    if in_shape is not None:
        kwargs["in_shape"] = tuple(in_shape)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        model = builder(**kwargs)
    return _initialize(model, _INIT[name], generator)


def _unknown_model(name) -> UnknownNameError:
    """The unknown-name error of a model, which also offers an import path."""
    err = UnknownNameError("model", name, MODELS)
    err.args = (f"{err}, or module.path:callable",)
    return err


def _type_name(obj) -> str:
    if obj is None:
        return "None"
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _resolve_path(path: str) -> Callable:
    """The callable that ``module.path:attr.path`` names (one-line errors naming ``path``)."""
    module_name, attr_path = path.split(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # any failure of the user's module is one line, not a traceback
        missing = isinstance(e, ModuleNotFoundError) and e.name == module_name.split(".")[0]
        hint = "; is its folder on PYTHONPATH?" if missing else ""
        raise MaskValidationError(
            f"model {path!r}: cannot import module {module_name!r} ({one_line(e, whole=True)}){hint}"
        ) from None
    for i, attr in enumerate(attr_path.split(".")):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            owner = ".".join([module_name, *attr_path.split(".")[:i]])
            raise MaskValidationError(
                f"model {path!r}: {owner} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise MaskValidationError(
            f"model {path!r}: {module_name}.{attr_path} is not callable (it is {_type_name(obj)})"
        )
    return obj


def _model_from_path(
    path: str, num_classes, in_shape, dataset, *, generator, options: dict
) -> nn.Module:
    """:func:`get_model` for an import path ``module.path:callable`` (see its Notes)."""
    if dataset is not None:
        from .datasets import DatasetSpec, get_spec

        spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
        num_classes = spec.num_outputs if num_classes is None else num_classes
        in_shape = spec.in_shape if in_shape is None else in_shape
    if num_classes is not None:
        num_classes = _check_classes(num_classes)
    if in_shape is not None:
        in_shape = _check_shape(in_shape, image=False, model=f"model {path!r}")
    builder = _resolve_path(path)
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):  # no signature to read (some builtins): offer everything
        sig = None
    params = (
        [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
        if sig is None
        else list(sig.parameters.values())
    )
    by_keyword = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    kwargs = {}
    for key, value in (("num_classes", num_classes), ("in_shape", in_shape)):
        if value is not None and (any_keyword or key in by_keyword):
            kwargs[key] = value
    for key in options:
        if not any_keyword and key not in by_keyword:
            known = [k for k in by_keyword if k not in ("num_classes", "in_shape")]
            raise MaskValidationError(
                f"model {path!r} has no option {key!r}"
                + (f"; options: {', '.join(known)}" if known else "; it takes no options")
            )
    kwargs.update(options)
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            given = ", ".join(kwargs) or "no arguments"
            raise MaskValidationError(
                f"model {path!r} cannot be called with {given}: {' '.join(str(e).split())}"
            ) from None
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        if cuda:
            torch.manual_seed(seed)
        else:  # seeding CUDA before it starts would queue the seed for later: leave it alone
            torch.random.default_generator.manual_seed(seed)
        model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise MaskValidationError(
            f"model {path!r} returned {_type_name(model)}, not a torch.nn.Module"
        )
    return model


def maskable_parameters(
    model: nn.Module, *, first_dense: bool = False, last_dense: bool = False
) -> dict[str, nn.Parameter]:
    """The weights a mask may cover: every Linear/Conv weight, in ``named_parameters()`` order.

    Biases, BatchNorm parameters and any other parameter are never maskable (methods-spec §1.1:
    CHITA's and GraNet's rule; ITOP's rule gives the same set on these models). This is
    :func:`masktopo.maskable.find_maskable`'s type rule, which also covers attention projections
    of models outside the zoo.

    Parameters
    ----------
    model : torch.nn.Module
    first_dense, last_dense : bool, optional
        Leave out the first (the stem) or the last (the classifier) of those layers, in
        ``named_parameters()`` order, so that they stay dense.

    Returns
    -------
    dict[str, torch.nn.Parameter]
        Parameter name (as in ``model.named_parameters()``, e.g. ``"conv1.weight"``) -> the
        parameter itself (not a copy). Empty when the model has no such layer left.
    """
    return find_maskable(model, first_dense=first_dense, last_dense=last_dense)
