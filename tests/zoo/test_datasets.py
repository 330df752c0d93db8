"""The data zoo: specs, IDX / CIFAR / Tiny-ImageNet readers on small real-format files, the
Cubist Spiral, the validation split, and bad files."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _files import cifar10_dir as _cifar10_dir
from _files import cifar_batch as _cifar_batch
from _files import cifar_bytes as _cifar_bytes
from torch.utils.data import DataLoader, Subset, TensorDataset

from masktopo.errors import MaskFileError, MaskValidationError, UnknownNameError
from masktopo.zoo import get_spec, load_dataset, split_train_val
from masktopo.zoo.datasets import (
    ArrayDataset,
    cubist_spiral,
    cubist_spiral_vertices,
    read_cifar_pickle,
    read_idx,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# -- specs ------------------------------------------------------------------------------------------
def test_specs():
    expected = {
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
        "tiny-imagenet": ((3, 64, 64), 200),
        "imagenet": ((3, 224, 224), 1000),
        "mnist": ((1, 28, 28), 10),
        "fashion-mnist": ((1, 28, 28), 10),
        "cubist-spiral": ((2,), 2),
        "mnist1d": ((40,), 10),
    }
    for name, (shape, classes) in expected.items():
        spec = get_spec(name)
        assert (spec.in_shape, spec.num_classes) == (shape, classes)
        assert spec.num_outputs == (1 if name == "cubist-spiral" else classes)
        if spec.mean is not None:
            assert len(spec.mean) == len(spec.std) == shape[0]
    assert get_spec("fashion-mnist").default_dir == str(FASHION_DIR)
    assert "apt-get install dataset-fashion-mnist" in get_spec("fashion-mnist").how_to_get
    with pytest.raises(UnknownNameError, match="known: cifar10, cifar100, cubist-spiral"):
        get_spec("cifar-10")


def test_loss_and_predictions():
    ce, bce = get_spec("mnist"), get_spec("cubist-spiral")
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 1])
    assert torch.equal(ce.predict(logits), y)
    assert ce.loss_fn(logits, y).item() == pytest.approx(
        -(math.log(math.exp(2) / (1 + math.exp(2))) + math.log(math.exp(3) / (1 + math.exp(3)))) / 2
    )
    z = torch.tensor([[1.5], [-0.5], [0.2]])
    y = torch.tensor([1, 0, 0])
    assert torch.equal(bce.predict(z), torch.tensor([1, 0, 1]))
    sig = torch.sigmoid(z.reshape(-1))
    manual = -(torch.log(sig[0]) + torch.log(1 - sig[1]) + torch.log(1 - sig[2])) / 3
    assert bce.loss_fn(z, y).item() == pytest.approx(manual.item(), rel=1e-6)


def test_imagenet_is_shapes_only_and_splits_are_checked(tmp_path):
    with pytest.raises(MaskValidationError, match="'imagenet' has shapes only"):
        load_dataset("imagenet", data_dir=tmp_path)
    with pytest.raises(UnknownNameError, match="unknown split 'val'; known: test, train"):
        load_dataset("cubist-spiral", split="val")


# -- IDX --------------------------------------------------------------------------------------------
_IDX_CODE = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, _IDX_CODE[arr.dtype.type], arr.ndim])
    head += struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, data: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _mnist_dir(root: Path, n_train=6, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), gz)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), gz)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, dtype, gz):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path / "a-idx3", _idx_bytes(arr), gz)
    got = read_idx(path)
    assert got.dtype == arr.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_idx(tmp_path, gz):
    ref = _mnist_dir(tmp_path, gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path)
    test = load_dataset("mnist", data_dir=tmp_path, split="test")
    assert isinstance(ds, ArrayDataset) and (len(ds), len(test)) == (6, 4)
    images, labels = ref["train"]
    x, y = ds[2]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert y.dtype == torch.int64 and int(y) == int(labels[2])
    expected = (torch.from_numpy(images[2]).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)
    xb, yb = ds.batch(torch.tensor([0, 2]))
    torch.testing.assert_close(xb[1], x)
    assert torch.equal(yb, torch.from_numpy(labels[[0, 2]].astype(np.int64)))
    xl, yl = next(iter(DataLoader(ds, batch_size=4)))
    assert xl.shape == (4, 1, 28, 28) and yl.dtype == torch.int64


def test_idx_alternative_layouts(tmp_path):
    # torchvision's download layout, with the dotted file names of some mirrors
    raw = tmp_path / "FashionMNIST" / "raw"
    _mnist_dir(raw, n_train=3)
    for f in raw.iterdir():
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path)) == 3


def test_idx_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(MaskFileError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path)) and "train-images-idx3-ubyte[.gz]" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "\n" not in msg
    with pytest.raises(MaskFileError, match="no such folder"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


def _corrupt(tmp_path, name, data):
    _mnist_dir(tmp_path)
    (tmp_path / name).write_bytes(data)
    with pytest.raises(MaskFileError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(err.value).startswith(str(tmp_path / name))
    return str(err.value)


def test_idx_truncated_and_corrupt_files(tmp_path):
    good = _idx_bytes(np.zeros((6, 28, 28), dtype=np.uint8))
    assert "truncated: shape (6, 28, 28)" in _corrupt(
        tmp_path, "train-images-idx3-ubyte", good[:-1]
    )
    assert "trailing bytes" in _corrupt(tmp_path, "train-images-idx3-ubyte", good + b"\0")
    assert "truncated IDX header" in _corrupt(tmp_path, "train-images-idx3-ubyte", good[:10])
    assert "bad magic number" in _corrupt(tmp_path, "train-images-idx3-ubyte", b"\1" + good[1:])
    labels = _idx_bytes(np.zeros(5, dtype=np.uint8))
    assert "5 labels for 6 images" in _corrupt(tmp_path, "train-labels-idx1-ubyte", labels)
    labels = _idx_bytes(np.full(6, 10, dtype=np.uint8))
    assert "label 10 >= 10 classes" in _corrupt(tmp_path, "train-labels-idx1-ubyte", labels)
    wrong = _idx_bytes(np.zeros((6, 32, 32), dtype=np.uint8))
    assert "expected uint8 images of 28x28" in _corrupt(tmp_path, "train-images-idx3-ubyte", wrong)


def test_idx_truncated_gzip(tmp_path):
    _mnist_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(MaskFileError, match="damaged gzip data") as err:
        load_dataset("mnist", data_dir=tmp_path, split="test")
    assert str(err.value).startswith(str(path))


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)
def test_real_fashion_mnist():
    train = load_dataset("fashion-mnist")
    test = load_dataset("fashion-mnist", split="test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert torch.equal(torch.bincount(train.targets), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.targets), torch.full((10,), 1000))
    x, _ = train.batch(torch.arange(0, 60_000, 7))
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02


# -- CIFAR (files in the distributed formats: tests/_files.py) ------------------------------------
@pytest.mark.parametrize("style", ["py2", "py3-p2", "py3-p5"])
def test_load_cifar10_batches(tmp_path, style):
    batches = _cifar10_dir(tmp_path / "cifar-10-batches-py", style)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert len(ds) == 15 and ds.data.dtype == torch.uint8 and ds.data.shape == (15, 3, 32, 32)
    # order: data_batch_1..5; row layout: 1024 red, 1024 green, 1024 blue, each row-major 32x32
    row = batches["data_batch_2"]["data"][1]
    raw = ds.data[3 + 1]
    assert int(raw[0, 0, 0]) == row[0] and int(raw[1, 0, 0]) == row[1024]
    assert int(raw[2, 5, 7]) == row[2048 + 5 * 32 + 7]
    assert int(ds.targets[4]) == batches["data_batch_2"]["labels"][1]
    x, _ = ds[4]
    expected = (float(row[2048 + 5 * 32 + 7]) / 255 - 0.4465) / 0.2010
    assert x[2, 5, 7].item() == pytest.approx(expected, abs=1e-5)
    test = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", split="test")
    assert len(test) == 3 and test.targets.tolist() == batches["test_batch"]["labels"]


def test_load_cifar10_from_the_archive(tmp_path):
    src = tmp_path / "src" / "cifar-10-batches-py"
    _cifar10_dir(src)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", data_dir=tmp_path, split="test")
    assert len(ds) == 3
    ds2 = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-python.tar.gz")
    assert len(ds2) == 15


def test_load_cifar100(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for split, n in (("train", 5), ("test", 2)):
        batch = _cifar_batch(n, 7, label_key="fine_labels", classes=100)
        batch["coarse_labels"] = [0] * n
        if split == "train":
            train_labels = batch["fine_labels"]
        (root / split).write_bytes(_cifar_bytes(batch, "py2"))
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert len(ds) == 5 and ds.targets.tolist() == train_labels
    assert len(load_dataset("cifar100", data_dir=root, split="test")) == 2
    with pytest.raises(MaskFileError, match="no 'fine_labels'"):
        (root / "test").write_bytes(_cifar_bytes(_cifar_batch(2, 1), "py2"))
        load_dataset("cifar100", data_dir=root, split="test")


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def test_malicious_cifar_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    payloads = {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "builtins.exec": _Evil(exec, f"open({str(marker)!r}, 'w').close()"),
    }
    for what, evil in payloads.items():
        root = tmp_path / what
        _cifar10_dir(root)
        data = pickle.dumps({b"data": evil, b"labels": [0]}, protocol=2)
        (root / "data_batch_3").write_bytes(data)
        with pytest.raises(MaskFileError, match="not a CIFAR python batch: refusing to load"):
            load_dataset("cifar10", data_dir=root)
        assert not marker.exists()
    # the one allowed non-numpy global, _codecs.encode, takes no encoding but latin1
    sneaky = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(MaskFileError, match="encoding 'rot13' is not allowed"):
        read_cifar_pickle(sneaky, "f")


def test_cifar_truncated_and_wrong_content(tmp_path):
    root = tmp_path / "c"
    _cifar10_dir(root)
    path = root / "data_batch_4"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(MaskFileError, match="truncated") as err:
        load_dataset("cifar10", data_dir=root)
    assert str(err.value).startswith(str(path))
    path.write_bytes(b"hello, not a pickle")
    with pytest.raises(MaskFileError, match="not a CIFAR python batch"):
        load_dataset("cifar10", data_dir=root)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(MaskFileError, match="holds a list"):
        load_dataset("cifar10", data_dir=root)
    bad = _cifar_batch(3, 0)
    bad["data"] = bad["data"][:, :3000]
    path.write_bytes(_cifar_bytes(bad, "py2"))
    with pytest.raises(MaskFileError, match="3000 values, expected 3072"):
        load_dataset("cifar10", data_dir=root)
    bad = _cifar_batch(3, 0)
    bad["labels"] = [0, 1]
    path.write_bytes(_cifar_bytes(bad, "py2"))
    with pytest.raises(MaskFileError, match="2 labels for 3 images"):
        load_dataset("cifar10", data_dir=root)
    bad["labels"] = [0, 1, 10]
    path.write_bytes(_cifar_bytes(bad, "py2"))
    with pytest.raises(MaskFileError, match=r"labels outside 0\.\.9"):
        load_dataset("cifar10", data_dir=root)
    path.unlink()
    with pytest.raises(MaskFileError, match="missing cifar10 batch file"):
        load_dataset("cifar10", data_dir=root)


def test_cifar_missing_says_where_and_how(tmp_path):
    with pytest.raises(MaskFileError) as err:
        load_dataset("cifar100", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-100-python") in msg and "cifar-100-python.tar.gz" in msg
    assert "--data-dir" in msg and "\n" not in msg


# -- Tiny-ImageNet ----------------------------------------------------------------------------------
def _jpeg(path: Path, rgb: np.ndarray, mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb if mode == "RGB" else rgb[..., 0], mode=mode)
    img.save(path, format="JPEG", quality=100)


def _tiny_dir(root: Path):
    root = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)][::-1]  # not sorted in the file, as in the original
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    flat = np.full((64, 64, 3), 0, dtype=np.uint8)
    for w in wnids:
        _jpeg(root / "train" / w / "images" / f"{w}_0.JPEG", flat)
    val = [
        ("val_0.JPEG", wnids[0], 200),
        ("val_1.JPEG", wnids[5], 40),
        ("val_2.JPEG", wnids[7], 90),
    ]
    lines = []
    for name, w, value in val:
        mode = "L" if name == "val_2.JPEG" else "RGB"  # a few originals are grayscale
        _jpeg(root / "val" / "images" / name, np.full((64, 64, 3), value, np.uint8), mode)
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root, val


def test_load_tiny_imagenet(tmp_path):
    root, _ = _tiny_dir(tmp_path)
    train = load_dataset("tiny-imagenet", data_dir=tmp_path)
    assert len(train) == 200 and train.data.shape == (200, 3, 64, 64)
    assert train.targets.tolist() == list(range(200))  # class = rank of the sorted wnid
    test = load_dataset("tiny-imagenet", data_dir=root, split="test")
    assert test.targets.tolist() == [199, 194, 192]
    assert test.data.shape == (3, 3, 64, 64)
    assert abs(int(test.data[1].float().mean()) - 40) <= 2
    assert torch.equal(test.data[2, 0], test.data[2, 2])  # grayscale -> RGB


def test_tiny_imagenet_bad_files(tmp_path):
    with pytest.raises(MaskFileError, match=r"looked for wnids\.txt"):
        load_dataset("tiny-imagenet", data_dir=tmp_path)
    root, _ = _tiny_dir(tmp_path)
    bad = root / "val" / "images" / "val_1.JPEG"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(MaskFileError, match="cannot decode the image") as err:
        load_dataset("tiny-imagenet", data_dir=root, split="test")
    assert str(err.value).startswith(str(bad))
    _jpeg(bad, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(MaskFileError, match="expected 64x64"):
        load_dataset("tiny-imagenet", data_dir=root, split="test")
    bad.unlink()
    with pytest.raises(MaskFileError, match=r"listed in val_annotations\.txt line 2 but missing"):
        load_dataset("tiny-imagenet", data_dir=root, split="test")
    (root / "wnids.txt").write_text("n1\nn2\n")
    with pytest.raises(MaskFileError, match="expected 200 distinct class ids, found 2"):
        load_dataset("tiny-imagenet", data_dir=root)


# -- Cubist Spiral ----------------------------------------------------------------------------------
def test_cubist_spiral_vertices():
    a, b, theta = cubist_spiral_vertices()
    assert a.shape == b.shape == (17, 2) and a.dtype == torch.float64
    steps = torch.diff(theta)
    torch.testing.assert_close(steps, torch.full((16,), math.pi / 4, dtype=torch.float64))
    assert math.degrees(theta[0].item()) == pytest.approx(252.0)
    # the two arms sit +-15 from the spiral r = 10 theta + pi along the radial direction
    unit = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    torch.testing.assert_close(a - b, 30 * unit)
    mid = (a + b) / 2
    radial = mid[1:] - mid[:-1]
    r = 10 * theta + math.pi
    base = r[:, None] * unit
    torch.testing.assert_close(radial, base[1:] - base[:-1])
    assert min(a.min().item(), b.min().item()) == pytest.approx(0.0, abs=1e-12)


def test_cubist_spiral_points():
    x, y = cubist_spiral()
    assert x.shape == (49_982, 2) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int((y == 0).sum()) == int((y == 1).sum()) == 24_991
    assert torch.equal(y[:24_991], torch.zeros(24_991, dtype=torch.int64))
    # standardised: zero mean, unit unbiased std per coordinate
    assert x.double().mean(0).abs().max().item() < 1e-6
    torch.testing.assert_close(
        x.double().std(0), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0
    )
    # deterministic
    x2, y2 = cubist_spiral()
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_cubist_spiral_segments_are_octagonal():
    a, _, _ = cubist_spiral_vertices()
    seg = a[1:] - a[:-1]
    # an octagonal spiral: every edge within 4 degrees of a multiple of 45 (3.7 at the centre)
    for d in seg:
        angle = math.degrees(math.atan2(d[1].item(), d[0].item())) % 45
        assert min(angle, 45 - angle) < 4
    lengths = seg.norm(dim=1)
    counts = torch.floor(lengths / lengths.sum() * 25_000).long()
    assert int(counts.sum()) == 24_991
    x, _ = cubist_spiral()
    arm = x[:24_991].double()
    ends, verts, start = [], [], 0
    for i, n in enumerate(counts.tolist()):
        pts = arm[start : start + n]
        start += n
        # segment i runs from vertex i+1 (t = 0) to vertex i (t = 1), on one straight line
        ends += [pts[0], pts[-1]]
        verts += [a[i + 1], a[i]]
        d = pts[-1] - pts[0]
        cross = (pts[:, 0] - pts[0, 0]) * d[1] - (pts[:, 1] - pts[0, 1]) * d[0]
        assert cross.abs().max().item() < 1e-4 * d.norm().item()
        gaps = (pts[1:] - pts[:-1]).norm(dim=1)
        # evenly spaced, up to float32 rounding of coordinates near 1
        assert (gaps.max() - gaps.min()).item() < 1e-2 * gaps.mean().item()
    # the segment ends are the vertices, up to the per-coordinate standardisation
    ends, verts = torch.stack(ends), torch.stack(verts)
    for k in range(2):
        design = torch.stack([verts[:, k], torch.ones(len(verts), dtype=torch.float64)], dim=1)
        coef = torch.linalg.lstsq(design, ends[:, k : k + 1]).solution
        assert coef[0].item() > 0
        assert (design @ coef - ends[:, k : k + 1]).abs().max().item() < 1e-5


def test_cubist_spiral_dataset_and_model_head():
    train = load_dataset("cubist-spiral")
    test = load_dataset("cubist-spiral", split="test")
    assert torch.equal(train.data, test.data)  # the benchmark measures fit on the same points
    x, y = train[30_000]
    assert x.shape == (2,) and int(y) == 1


# -- validation split -------------------------------------------------------------------------------
def test_split_train_val():
    ds = ArrayDataset(
        torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1, 1),
        torch.arange(100) % 10,
        get_spec("mnist"),
        "train",
    )
    tr, va = split_train_val(ds, 0.2, torch.Generator().manual_seed(1))
    assert (len(tr), len(va)) == (80, 20)
    ids_tr, ids_va = tr.data.reshape(-1).tolist(), va.data.reshape(-1).tolist()
    assert sorted(ids_tr + ids_va) == list(range(100)) and ids_tr == sorted(ids_tr)
    tr2, va2 = split_train_val(ds, 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(va.data, va2.data) and torch.equal(tr.targets, tr2.targets)
    _, va3 = split_train_val(ds, 0.2, torch.Generator().manual_seed(2))
    assert not torch.equal(va.data, va3.data)
    plain = TensorDataset(torch.arange(10))
    ptr, pva = split_train_val(plain, 0.3, torch.Generator().manual_seed(0))
    assert isinstance(ptr, Subset) and (len(ptr), len(pva)) == (7, 3)
    assert sorted(ptr.indices + pva.indices) == list(range(10))
    for bad in (0.0, 1.0, -0.1, 0.001):
        with pytest.raises(MaskValidationError):
            split_train_val(ds, bad, torch.Generator())
    with pytest.raises(MaskValidationError, match=r"seeded torch\.Generator"):
        split_train_val(ds, 0.2, None)


def test_dataset_to_device_and_subset():
    x, y = cubist_spiral()
    ds = ArrayDataset(x[:10], y[:10], get_spec("cubist-spiral"), "train")
    sub = ds.subset([1, 3])
    assert torch.equal(sub.data, x[[1, 3]]) and len(ds.to("cpu")) == 10
    with pytest.raises(MaskValidationError, match="10 samples but 3 labels"):
        ArrayDataset(x[:10], y[:3], get_spec("cubist-spiral"), "train")


# -- MNIST-1D ---------------------------------------------------------------------------------------
def test_mnist1d_is_the_packages_default_dataset_offline_and_leaves_numpy_alone():
    """MNIST-1D comes from the mnist1d package's generator with its default arguments (4,000
    train and 1,000 test sequences of 40 values, 10 classes); nothing is downloaded and NumPy's
    global random state is left as it was."""
    pytest.importorskip("mnist1d")
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)  # noqa: NPY002 - the legacy global state is what is checked
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    train = load_dataset("mnist1d")
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    test = load_dataset("mnist1d", split="test", data_dir="/nonexistent")  # ignored: generated
    assert (len(train), len(test)) == (4000, 1000)
    assert train.data.shape == (4000, 40) and train.data.dtype == torch.float32
    ref = make_dataset(get_dataset_args())  # an independent call of the package
    assert np.array_equal(train.data.numpy(), ref["x"].astype(np.float32))
    assert np.array_equal(test.targets.numpy(), ref["y_test"])
    assert sorted(set(train.targets.tolist())) == list(range(10))
    x, y = train[0]
    assert x.shape == (40,) and y.dtype == torch.int64
