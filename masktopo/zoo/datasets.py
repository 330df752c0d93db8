"""The data zoo: dataset shapes, local loaders and the Cubist Spiral.

:data:`DATASETS` maps each dataset name to a :class:`DatasetSpec` (input shape, class count,
default folder, how to get the files, normalisation). Data-free pruning methods need only the spec
(:func:`get_spec`), never the files. :func:`load_dataset` reads a local copy into memory:

* ``mnist``, ``fashion-mnist``: the four IDX files, raw or gzipped (Fashion-MNIST's default folder
  is ``/usr/share/datasets/fashion-mnist``, from the Debian package ``dataset-fashion-mnist``);
* ``cifar10``, ``cifar100``: the "python version" pickled batches, extracted or as the ``.tar.gz``,
  read by an unpickler that can only rebuild numpy arrays (no code in a file can run);
* ``tiny-imagenet``: the ``tiny-imagenet-200`` folder (JPEGs decoded with Pillow);
* ``cubist-spiral``: generated exactly as Zhang & Papyan's ``CubistSpiral.py`` (no files);
* ``imagenet``: shapes only.

Nothing is ever downloaded. A missing or damaged file raises :class:`MaskFileError` naming where
it looked and how to get the data.

Examples
--------
>>> from masktopo.zoo import get_spec, load_dataset
>>> get_spec("cifar10").in_shape
(3, 32, 32)
>>> ds = load_dataset("cubist-spiral")
>>> len(ds), ds[0][0].shape, ds[0][1].dtype
(49982, torch.Size([2]), torch.int64)
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import MaskFileError, MaskValidationError, UnknownNameError

__all__ = [
    "DATASETS",
    "SPLITS",
    "ArrayDataset",
    "DatasetSpec",
    "cubist_spiral",
    "cubist_spiral_vertices",
    "get_spec",
    "load_dataset",
    "read_cifar_pickle",
    "read_idx",
    "split_train_val",
]

#: The splits :func:`load_dataset` knows.
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """What a model and a data-free method need to know about a dataset, and where its files are.

    Attributes
    ----------
    name : str
        The name on the command line.
    in_shape : tuple of int
        One sample's shape: ``(C, H, W)`` for images, ``(D,)`` for vectors.
    num_classes : int
        Number of classes.
    default_dir : str or None
        Where :func:`load_dataset` looks without ``data_dir`` (``~`` is expanded); ``None`` for a
        generated or shapes-only dataset.
    how_to_get : str
        One sentence on getting the files, quoted in the missing-data error.
    mean, std : tuple of float or None
        Per-channel normalisation applied to pixel values scaled to [0, 1]; ``None``: none.
    loss : {"cross_entropy", "bce"}
        ``"bce"``: a binary task trained with one logit and ``BCEWithLogitsLoss`` (labels still
        come as int64 class indices 0/1; see :meth:`loss_fn`).
    loadable : bool
        False for a shapes-only dataset (imagenet).
    """

    name: str
    in_shape: tuple[int, ...]
    num_classes: int
    default_dir: str | None
    how_to_get: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    loss: str = "cross_entropy"
    loadable: bool = True

    @property
    def num_outputs(self) -> int:
        """Output units a model needs: 1 logit for a ``"bce"`` task, else ``num_classes``."""
        return 1 if self.loss == "bce" else self.num_classes

    def loss_fn(self, logits, y):
        """The training loss, mean over the batch.

        ``cross_entropy``: :math:`-\\frac1n\\sum_i \\log \\operatorname{softmax}(z_i)_{y_i}`;
        ``bce``: :math:`\\frac1n\\sum_i \\operatorname{BCEWithLogits}(z_i, y_i)` with the logit
        of shape ``(n, 1)`` or ``(n,)`` and the int64 labels cast to float.
        """
        import torch.nn.functional as F

        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.reshape(-1), y.reshape(-1).float())
        return F.cross_entropy(logits, y)

    def predict(self, logits):
        """Predicted class indices (int64): ``argmax`` over classes, or ``logit > 0`` for bce."""
        if self.loss == "bce":
            return (logits.reshape(-1) > 0).long()
        return logits.argmax(dim=1)


_CIFAR_HOW = (
    "get the CIFAR-{n} 'python version' (the archive cifar-{n}-python.tar.gz from the dataset's "
    "home page at the University of Toronto) and pass its folder as --data-dir: the archive "
    "itself, or the extracted {folder}/ folder, or that folder's contents ({files})"
)

#: Dataset name -> :class:`DatasetSpec`, in the CLI's spelling.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "cifar10",
            (3, 32, 32),
            10,
            "~/data/cifar10",
            _CIFAR_HOW.format(
                n=10, folder="cifar-10-batches-py", files="data_batch_1..5, test_batch"
            ),
            # kuangliu/pytorch-cifar, ITOP and GraNet use these constants (the std is the mean of
            # per-image stds, not the dataset std 0.2470, 0.2435, 0.2616).
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2023, 0.1994, 0.2010),
        ),
        DatasetSpec(
            "cifar100",
            (3, 32, 32),
            100,
            "~/data/cifar100",
            _CIFAR_HOW.format(n=100, folder="cifar-100-python", files="train, test"),
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
        ),
        DatasetSpec(
            "tiny-imagenet",
            (3, 64, 64),
            200,
            "~/data/tiny-imagenet",
            "get Tiny ImageNet (tiny-imagenet-200.zip from the Stanford CS231n course site), unzip "
            "it and pass the tiny-imagenet-200/ folder (wnids.txt, train/, val/) as --data-dir",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        ),
        DatasetSpec(
            "imagenet",
            (3, 224, 224),
            1000,
            None,
            "imagenet is shapes only here: use it with data-free methods (erk, er, random, "
            "magnitude, synflow); masktopo does not load ImageNet",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            loadable=False,
        ),
        DatasetSpec(
            "mnist",
            (1, 28, 28),
            10,
            "~/data/mnist",
            "get the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz) and pass their folder "
            "as --data-dir",
            mean=(0.1307,),
            std=(0.3081,),
        ),
        DatasetSpec(
            "fashion-mnist",
            (1, 28, 28),
            10,
            "/usr/share/datasets/fashion-mnist",
            "install the Debian package: apt-get install dataset-fashion-mnist (it puts the four "
            "IDX .gz files in /usr/share/datasets/fashion-mnist), or pass a folder with "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte (raw or .gz) as --data-dir",
            mean=(0.2860,),
            std=(0.3530,),
        ),
        DatasetSpec(
            "cubist-spiral",
            (2,),
            2,
            None,
            "cubist-spiral is generated, no files needed",
            loss="bce",
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a dataset name; no file is touched.

    Raises
    ------
    UnknownNameError
        For a name not in :data:`DATASETS` (the message lists the known ones).
    """
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("dataset", str(name), DATASETS) from None


# -- the dataset object -----------------------------------------------------------------------------
class ArrayDataset(Dataset):
    """An in-memory dataset of raw samples and int64 labels, normalised on access.

    ``data`` holds images as uint8 ``[N, C, H, W]`` (4x smaller than float32; move it to the GPU
    once with :meth:`to` and draw normalised batches with :meth:`batch`) or vectors as float32
    ``[N, D]``. Item ``i`` is ``(x, y)``: ``x`` float32, ``(data[i] / 255 - mean) / std`` per
    channel for images (torchvision's ``ToTensor`` + ``Normalize``), ``data[i]`` for vectors;
    ``y`` an int64 scalar tensor.

    Attributes
    ----------
    data : torch.Tensor
    targets : torch.Tensor
        int64, shape ``[N]``.
    spec : DatasetSpec
    split : str
    """

    def __init__(self, data, targets, spec: DatasetSpec, split: str):
        if len(data) != len(targets):
            raise MaskValidationError(f"{len(data)} samples but {len(targets)} labels")
        self.data = data
        self.targets = targets.to(torch.int64)
        self.spec = spec
        self.split = split
        self._mean = self._std = None
        if data.dtype == torch.uint8 and spec.mean is not None:
            shape = (-1,) + (1,) * (data.dim() - 2)
            self._mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(shape)
            self._std = torch.tensor(spec.std, dtype=torch.float32).reshape(shape)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        return self.normalize(self.data[index]), self.targets[index]

    def __repr__(self) -> str:
        return (
            f"ArrayDataset({self.spec.name!r}, split={self.split!r}, n={len(self)}, "
            f"sample={tuple(self.data.shape[1:])}, device={self.data.device})"
        )

    def normalize(self, raw):
        """Raw samples (one or a batch, on any device) -> normalised float32."""
        if raw.dtype != torch.uint8:
            return raw.to(torch.float32)
        x = raw.to(torch.float32).div_(255.0)
        if self._mean is None:
            return x
        # mean/std are [C, 1, 1]: they broadcast over one sample [C, H, W] or a batch.
        return x.sub_(self._mean.to(x.device)).div_(self._std.to(x.device))

    def batch(self, index, device=None):
        """A normalised batch ``(x, y)`` for an index tensor, gathered then moved to ``device``."""
        x, y = self.data[index], self.targets[index]
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return self.normalize(x), y

    def subset(self, indices) -> ArrayDataset:
        """A new dataset with the samples at ``indices`` (copies)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ArrayDataset(self.data[idx], self.targets[idx], self.spec, self.split)

    def to(self, device) -> ArrayDataset:
        """The same dataset with its tensors on ``device`` (for GPU-resident batching)."""
        return ArrayDataset(self.data.to(device), self.targets.to(device), self.spec, self.split)


def split_train_val(dataset, val_fraction: float, generator):
    """Carve a validation split from a training set, deterministically.

    A permutation of ``range(N)`` drawn from ``generator`` assigns its first
    ``round(val_fraction * N)`` positions to validation and the rest to training; both index
    lists are then sorted, so each part keeps the original order.

    Parameters
    ----------
    dataset : ArrayDataset or torch.utils.data.Dataset
        Anything with ``len``; an :class:`ArrayDataset` gives two ``ArrayDataset`` parts, any
        other dataset two ``torch.utils.data.Subset``.
    val_fraction : float
        In (0, 1); both parts must end up non-empty.
    generator : torch.Generator
        Seeded by the caller: the same state gives the same split.

    Returns
    -------
    (train, val)
    """
    if generator is None or not isinstance(generator, torch.Generator):
        raise MaskValidationError("split_train_val needs a seeded torch.Generator")
    val_fraction = float(val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise MaskValidationError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n = len(dataset)
    n_val = round(val_fraction * n)
    if n_val < 1 or n_val >= n:
        raise MaskValidationError(
            f"val_fraction {val_fraction} of {n} samples leaves an empty train or validation part"
        )
    perm = torch.randperm(n, generator=generator)
    val_idx, _ = torch.sort(perm[:n_val])
    train_idx, _ = torch.sort(perm[n_val:])
    if isinstance(dataset, ArrayDataset):
        return dataset.subset(train_idx), dataset.subset(val_idx)
    from torch.utils.data import Subset

    return Subset(dataset, train_idx.tolist()), Subset(dataset, val_idx.tolist())


# -- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------------
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by magic number, not by suffix)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise MaskFileError(path, f"cannot read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, ValueError) as e:
            raise MaskFileError(path, f"damaged gzip data ({e})") from None
    return raw


def read_idx(path) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format), raw or gzip-compressed.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
    float32, 0x0E float64), the number of dimensions ``d``; then ``d`` big-endian uint32 sizes;
    then the values, big-endian, in C order. The data must be exactly ``prod(sizes)`` values.

    Returns
    -------
    numpy.ndarray
        In native byte order, of the file's shape.

    Raises
    ------
    MaskFileError
        Naming the file: a bad magic number, a truncated header or body, trailing bytes.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise MaskFileError(path, f"not an IDX file: {len(buf)} bytes, shorter than the header")
    if buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES or buf[3] == 0:
        raise MaskFileError(path, f"not an IDX file: bad magic number 0x{buf[:4].hex()}")
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise MaskFileError(path, f"truncated IDX header: {len(buf)} bytes, need {header}")
    shape = tuple(int(s) for s in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    need = math.prod(shape) * dtype.itemsize
    have = len(buf) - header
    if have != need:
        what = "truncated" if have < need else "trailing bytes after the data"
        raise MaskFileError(
            path, f"{what}: shape {shape} needs {need} data bytes, the file has {have}"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _find_idx(root: Path, base: str, spec: DatasetSpec) -> Path:
    """``base`` (or its dotted variant ``train-images.idx3-ubyte``), raw or ``.gz``."""
    dirs = [root, root / "raw", root / _TORCHVISION_FOLDER[spec.name] / "raw"]
    stems = [base, base.replace("-idx", ".idx")]
    for d in dirs:
        for stem in stems:
            for name in (stem, stem + ".gz"):
                if (d / name).is_file():
                    return d / name
    raise MaskFileError(
        root,
        f"no {spec.name} file {base}[.gz] here (looked in {root}, raw/ and "
        f"{_TORCHVISION_FOLDER[spec.name]}/raw/); {spec.how_to_get}",
    )


def _load_idx(spec: DatasetSpec, root: Path, split: str):
    img_path = _find_idx(root, _IDX_NAMES[split][0], spec)
    lab_path = _find_idx(root, _IDX_NAMES[split][1], spec)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.dtype != np.uint8 or images.shape[1:] != spec.in_shape[1:]:
        raise MaskFileError(
            img_path,
            f"expected uint8 images of {spec.in_shape[1]}x{spec.in_shape[2]}, "
            f"got {images.dtype} of shape {images.shape}",
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise MaskFileError(
            lab_path, f"expected uint8 labels [N], got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise MaskFileError(
            lab_path, f"{len(labels)} labels for {len(images)} images in {img_path}"
        )
    if labels.size and int(labels.max()) >= spec.num_classes:
        raise MaskFileError(lab_path, f"label {int(labels.max())} >= {spec.num_classes} classes")
    data = torch.from_numpy(images.copy()).unsqueeze(1)
    return ArrayDataset(data, torch.from_numpy(labels.astype(np.int64)), spec, split)


# -- CIFAR python pickles ---------------------------------------------------------------------------
def _latin1_encode(text, encoding="latin1"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _frombuffer(buf, dtype, shape, order):
    arr = np.frombuffer(buf, dtype=dtype)
    return arr.reshape(shape, order=order) if shape else arr[0]


def _safe_globals() -> dict[tuple[str, str], object]:
    reconstruct = np.ndarray.__reduce_ex__(np.zeros(1), 2)[0]
    scalar = np.uint8(0).__reduce__()[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global is refused before it loads."""

    _allowed = _safe_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


def read_cifar_pickle(data: bytes, name) -> dict[str, object]:
    """Decode one CIFAR "python version" batch file, allowing nothing but numpy arrays.

    A batch is a pickled dict (written by Python 2: ``encoding="bytes"`` keeps its str values as
    bytes) with ``data``: uint8 ``[n, 3072]`` (1024 red, 1024 green, 1024 blue values, each a
    row-major 32x32 image) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100): n ints.
    The unpickler resolves only numpy's array-rebuilding functions, so a file that names any
    other callable (``os.system``, ``builtins.eval``, ...) is rejected before anything runs.

    Parameters
    ----------
    data : bytes
        The file's bytes.
    name : str or os.PathLike
        The file, for messages.

    Returns
    -------
    dict
        With str keys.

    Raises
    ------
    MaskFileError
        Naming the file: not a pickle, truncated, a forbidden global, not a dict.
    """
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise MaskFileError(name, f"not a CIFAR python batch: {e}") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise MaskFileError(name, f"not a CIFAR python batch (truncated or damaged: {e})") from None
    if not isinstance(obj, dict):
        raise MaskFileError(name, f"not a CIFAR python batch: holds a {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


_CIFAR_LAYOUT = {
    # name -> (folder inside the archive, archive name, split -> batch files, label key)
    "cifar10": (
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "labels",
    ),
    "cifar100": (
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        {"train": ["train"], "test": ["test"]},
        "fine_labels",
    ),
}


def _cifar_sources(spec: DatasetSpec, root: Path, split: str) -> list[tuple[str, bytes]]:
    folder, archive, files, _ = _CIFAR_LAYOUT[spec.name]
    for d in (root, root / folder):
        if (d / files[split][0]).is_file():
            out = []
            for f in files[split]:
                path = d / f
                if not path.is_file():
                    raise MaskFileError(path, f"missing {spec.name} batch file; {spec.how_to_get}")
                out.append((str(path), _read_plain(path)))
            return out
    tar_path = root / archive if (root / archive).is_file() else root
    if tar_path.is_file():
        return _read_tar_members(tar_path, [f"{folder}/{f}" for f in files[split]], spec)
    raise MaskFileError(
        root,
        f"no {spec.name} python batches here (looked for {files[split][0]} in {root} and "
        f"{root / folder}, and for {archive}); {spec.how_to_get}",
    )


def _read_plain(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise MaskFileError(path, f"cannot read: {e.strerror or e}") from None


def _read_tar_members(tar_path: Path, members: list[str], spec: DatasetSpec):
    out = []
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in members:
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise MaskFileError(
                        tar_path, f"archive has no {member}; {spec.how_to_get}"
                    ) from None
                f = tar.extractfile(info) if info.isfile() else None
                if f is None:
                    raise MaskFileError(tar_path, f"{member} in the archive is not a file")
                out.append((f"{tar_path}:{member}", f.read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise MaskFileError(tar_path, f"cannot read the archive ({e})") from None
    return out


def _load_cifar(spec: DatasetSpec, root: Path, split: str):
    label_key = _CIFAR_LAYOUT[spec.name][3]
    xs, ys = [], []
    for name, raw in _cifar_sources(spec, root, split):
        batch = read_cifar_pickle(raw, name)
        data, labels = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
            raise MaskFileError(name, "not a CIFAR python batch: 'data' is not a uint8 [n, 3072]")
        if data.shape[1] != 3 * 32 * 32:
            raise MaskFileError(name, f"'data' rows have {data.shape[1]} values, expected 3072")
        if labels is None:
            raise MaskFileError(name, f"not a {spec.name} python batch: no {label_key!r}")
        try:
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise MaskFileError(name, f"{label_key!r} is not a list of integers") from None
        if len(labels) != len(data):
            raise MaskFileError(name, f"{len(labels)} labels for {len(data)} images")
        if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
            raise MaskFileError(name, f"labels outside 0..{spec.num_classes - 1}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    data = torch.from_numpy(np.concatenate(xs))
    return ArrayDataset(data, torch.from_numpy(np.concatenate(ys)), spec, split)


# -- Tiny-ImageNet ----------------------------------------------------------------------------------
def _tiny_root(spec: DatasetSpec, root: Path) -> Path:
    for d in (root, root / "tiny-imagenet-200"):
        if (d / "wnids.txt").is_file():
            return d
    raise MaskFileError(
        root,
        f"no tiny-imagenet here (looked for wnids.txt in {root} and "
        f"{root / 'tiny-imagenet-200'}); {spec.how_to_get}",
    )


def _decode_images(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Decode JPEGs to uint8 ``[N, 3, H, W]`` (RGB) on a few threads; Pillow releases the GIL."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, size[0], size[1]), dtype=np.uint8)

    def one(i: int) -> None:
        try:
            with Image.open(paths[i]) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise MaskFileError(paths[i], f"cannot decode the image ({e})") from None
        if arr.shape[:2] != size:
            raise MaskFileError(paths[i], f"image is {arr.shape[1]}x{arr.shape[0]}, expected 64x64")
        out[i] = arr.transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(one, range(len(paths))):
            pass
    return out


def _load_tiny_imagenet(spec: DatasetSpec, root: Path, split: str):
    root = _tiny_root(spec, root)
    wnids_file = root / "wnids.txt"
    wnids = [w.strip() for w in _read_plain(wnids_file).decode("utf-8", "replace").split()]
    wnids = [w for w in wnids if w]
    if len(wnids) != spec.num_classes or len(set(wnids)) != len(wnids):
        raise MaskFileError(
            wnids_file, f"expected {spec.num_classes} distinct class ids, found {len(wnids)}"
        )
    # Class index = rank of the wnid in sorted order, as torchvision's ImageFolder on train/.
    index = {w: i for i, w in enumerate(sorted(wnids))}
    paths, labels = [], []
    if split == "train":
        for w in sorted(wnids):
            d = root / "train" / w / "images"
            files = sorted(p for p in d.glob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
            if not files:
                raise MaskFileError(d, f"no training images for class {w}; {spec.how_to_get}")
            paths += files
            labels += [index[w]] * len(files)
    else:  # the labelled val/ split is the test split (test/ has no labels)
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise MaskFileError(ann, f"missing (the labelled test split); {spec.how_to_get}")
        for lineno, line in enumerate(_read_plain(ann).decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise MaskFileError(ann, f"line {lineno}: expected '<file>\\t<wnid>\\t...'")
            path = root / "val" / "images" / parts[0]
            if not path.is_file():
                raise MaskFileError(path, f"listed in {ann.name} line {lineno} but missing")
            paths.append(path)
            labels.append(index[parts[1]])
        if not paths:
            raise MaskFileError(ann, "lists no images")
    data = torch.from_numpy(_decode_images(paths, spec.in_shape[1:]))
    return ArrayDataset(data, torch.tensor(labels, dtype=torch.int64), spec, split)


# -- the Cubist Spiral ------------------------------------------------------------------------------
def cubist_spiral_vertices():
    r"""The two arms' vertices of the Cubist Spiral (methods-spec §7.1), float64 ``[17, 2]`` each.

    Angles :math:`\theta_j = \pi + 4\pi j/16 + 0.4\pi`, :math:`j = 0..16` (45° steps from 252°
    over two turns); radius :math:`r_j = 10\theta_j + \pi`; class-0 vertices
    :math:`b_j + 15 u_j`, class-1 vertices :math:`b_j - 15 u_j` with :math:`b_j = r_j u_j`,
    :math:`u_j = (\cos\theta_j, \sin\theta_j)`; both shifted by one constant so that the minimum
    coordinate over both arms is 0. Zhang & Papyan (2024), ``cubist_spiral/CubistSpiral.py``.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Class-0 and class-1 vertices, and the angles as a third float64 tensor ``[17]``.
    """
    theta = np.linspace(1 * math.pi, 5 * math.pi, 17) + 1.6 * 1 / 8 * 2 * math.pi
    r = 10 * theta + math.pi
    unit = np.array([np.cos(theta), np.sin(theta)]).T
    base = np.array([np.cos(theta) * r, np.sin(theta) * r]).T
    arm_a = base + 15 * unit
    arm_b = base - 15 * unit
    shift = np.amin(np.stack((np.amin(arm_a, axis=0), np.amin(arm_b, axis=0))), axis=0)
    return torch.from_numpy(arm_a - shift), torch.from_numpy(arm_b - shift), torch.from_numpy(theta)


def _spiral_arm(v):
    """Points along consecutive vertices of one arm, as the reference's ``linspace(v)``.

    Segment ``i`` (from ``v[i]`` to ``v[i+1]``) gets ``floor(l_i / sum(l) * 25000)`` points,
    ``t * v[i] + (1 - t) * v[i+1]`` for ``t = linspace(0, 1)`` in float32 (so each segment runs
    from ``v[i+1]`` back to ``v[i]``, both endpoints included).
    """
    dist = torch.stack([torch.linalg.vector_norm(v[i] - v[i + 1]) for i in range(len(v) - 1)])
    prob = dist / torch.sum(dist)
    pieces = []
    for i in range(len(v) - 1):
        cur, nxt = v[i].unsqueeze(0), v[i + 1].unsqueeze(0)
        t = torch.linspace(0, 1, int(prob[i] * 50000 / 2)).unsqueeze(1)
        pieces.append(t * cur + (1 - t) * nxt)
    return torch.cat(pieces)


def cubist_spiral():
    """Generate the Cubist Spiral exactly as Zhang & Papyan (2024) do (methods-spec §7.1).

    Both arms are sampled with :func:`_spiral_arm` (24,991 points each, 49,982 in all), class 0
    (the +15 arm) first; the points are cast to float32 and each coordinate is standardised to
    zero mean and unit unbiased standard deviation over all points, in float32 as the reference
    does. There is no noise, no randomness and no train/test split.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``x`` float32 ``[49982, 2]`` and ``y`` int64 ``[49982]`` (0 then 1). The reference keeps
        ``y`` as float ``[N, 1]`` for ``BCEWithLogitsLoss``; :meth:`DatasetSpec.loss_fn` casts.
    """
    arm_a, arm_b, _ = cubist_spiral_vertices()
    xa, xb = _spiral_arm(arm_a), _spiral_arm(arm_b)
    x = torch.cat([xa, xb]).float()
    x = x - torch.mean(x, dim=0, keepdim=True)
    x = x / torch.std(x, dim=0, keepdim=True)
    y = torch.cat([torch.zeros(len(xa), dtype=torch.int64), torch.ones(len(xb), dtype=torch.int64)])
    return x, y


def _load_spiral(spec: DatasetSpec, root, split: str):
    x, y = cubist_spiral()
    return ArrayDataset(x, y, spec, split)


# -- dispatch ---------------------------------------------------------------------------------------
_LOADERS: dict[str, Callable] = {
    "mnist": _load_idx,
    "fashion-mnist": _load_idx,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "tiny-imagenet": _load_tiny_imagenet,
    "cubist-spiral": _load_spiral,
}


def load_dataset(name: str, *, data_dir=None, split: str = "train") -> ArrayDataset:
    """Load a dataset split from a local copy into memory.

    Parameters
    ----------
    name : str
        A :data:`DATASETS` name.
    data_dir : str or os.PathLike, optional
        Where the files are; defaults to the spec's ``default_dir``. Ignored for the generated
        ``cubist-spiral``.
    split : {"train", "test"}
        ``test`` is the official test set (Tiny-ImageNet: the labelled ``val/`` folder;
        Cubist Spiral: the same points as ``train``, as in the reference, which measures fit).

    Returns
    -------
    ArrayDataset
        Items ``(x float32 normalised, y int64)``.

    Raises
    ------
    UnknownNameError
        Unknown dataset or split.
    MaskFileError
        Files missing (the message says where it looked and how to get them), truncated or not
        in the expected format.
    MaskValidationError
        For ``imagenet``, which is shapes only.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise UnknownNameError("split", str(split), SPLITS)
    if not spec.loadable:
        raise MaskValidationError(f"dataset {spec.name!r} has shapes only: {spec.how_to_get}")
    root = None
    if spec.default_dir is not None or data_dir is not None:
        root = Path(
            os.path.expanduser(os.fspath(data_dir if data_dir is not None else spec.default_dir))
        )
        if spec.name != "cubist-spiral" and not root.exists():
            raise MaskFileError(root, f"no such folder; {spec.how_to_get}")
    return _LOADERS[spec.name](spec, root, split)
