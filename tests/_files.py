"""Test helpers shared by several test folders: a small mask set, a hand-written run, CIFAR
files in the distributed formats."""

from __future__ import annotations

import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

import masktopo
from masktopo import store
from masktopo.masks import MaskSet


def make_maskset(
    seed: int = 0, *, weights: bool = True, dtype: torch.dtype = torch.float32, meta=None
) -> MaskSet:
    """Linear + conv layers with odd numels (so the packed masks have padding bits).

    Layer names are not in alphabetical order, to check that files keep the order.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "z.fc.weight": (5, 7),
        "a.conv.weight": (3, 2, 3, 3),
        "m.conv3d.weight": (2, 1, 3, 1, 3),
    }
    masks, wts = {}, {}
    for name, shape in shapes.items():
        masks[name] = torch.rand(shape, generator=g) < 0.4
        wts[name] = (torch.randn(shape, generator=g) * masks[name]).to(dtype)
    return MaskSet(masks, weights=wts if weights else None, meta=meta)


def write_run_json(root: Path, first: MaskSet, config: dict) -> None:
    """``root/run.json`` (format version 1, as written before the run layer) and ``masks/``."""
    root.mkdir(parents=True, exist_ok=True)
    run = {
        "format": "masktopo.run",
        "format_version": 1,
        "created": "2025-01-01T00:00:00+00:00",
        "masktopo_version": masktopo.__version__,
        "config": config,
        "seed": 0,
        "layers": [
            {"name": x.name, "kind": x.kind, "shape": list(x.shape)} for x in first.layers()
        ],
    }
    (root / "run.json").write_text(json.dumps(run), encoding="utf-8")
    (root / "masks").mkdir(exist_ok=True)


def write_run(
    root: Path, masksets: list[MaskSet], *, config: dict | None = None, suffix=".safetensors"
) -> Path:
    """Write a run directory the way a recorder must (see docs/formats.md).

    Each event's mask file is written (atomically) before its line is appended to events.jsonl.
    """
    write_run_json(root, masksets[0], config if config is not None else {"method": "test",
                                                                          "density": 0.4})  # fmt: skip
    for i, ms in enumerate(masksets):
        rel = f"masks/event-{i:06d}{suffix}"
        store.save(root / rel, ms)
        line = {
            "event": i,
            "step": 100 * i,
            "epoch": i,
            "kind": "init" if i == 0 else "prune",
            "file": rel,
            "has_weights": ms.has_weights,
            "nnz": ms.nnz_per_layer(),
            "density": ms.density(),
            "train_loss": 1.0 / (i + 1),
        }
        with open(root / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    return root


# -- CIFAR files as distributed (the Python pickles of cifar-10-batches-py) ----------------------
class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), like cPickle did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def cifar_bytes(batch: dict, style: str) -> bytes:
    if style == "py2":  # the byte layout of the files as distributed
        buf = io.BytesIO()
        Py2Pickler(buf, 2).dump({k: v for k, v in batch.items()})
        return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    protocol = {"py3-p2": 2, "py3-p5": 5}[style]
    return pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=protocol)


def cifar_batch(n, seed, label_key="labels", classes=10):
    rng = np.random.default_rng(seed)
    return {
        "batch_label": f"batch {seed}",
        label_key: [int(v) for v in rng.integers(0, classes, size=n)],
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
    }


def cifar10_dir(root: Path, style="py2", n=3):
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        batches[name] = cifar_batch(n, i)
        (root / name).write_bytes(cifar_bytes(batches[name], style))
    return batches
