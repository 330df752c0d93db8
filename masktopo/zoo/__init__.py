"""Models and datasets of the sparse-training literature, shared by PAGS and the trainer.

Public API::

    get_model(name, *, num_classes=None, in_shape=None, dataset=None, generator=None, **options)
    MODELS                                   # model name -> builder
    maskable_parameters(model, *, first_dense=False, last_dense=False)
    get_spec(name) -> DatasetSpec            # shapes and class count; no files needed
    DATASETS                                 # dataset name -> DatasetSpec
    load_dataset(name, *, data_dir=None, split="train") -> ArrayDataset
    split_train_val(dataset, val_fraction, generator) -> (train, val)

:data:`MODEL_NAMES` and :data:`DATASET_NAMES` are plain tuples, available without importing torch
(for the command line's ``--help``); everything else is imported on first use. See docs/zoo.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import (  # noqa: F401
        DATASETS,
        ArrayDataset,
        DatasetSpec,
        cubist_spiral,
        get_spec,
        load_dataset,
        split_train_val,
    )
    from .models import MODELS, check_model_options, get_model, maskable_parameters  # noqa: F401

#: Model names, in the CLI's spelling (the keys of ``models.MODELS``).
MODEL_NAMES = (
    "resnet18",
    "resnet34",
    "resnet20",
    "resnet50",
    "vgg16",
    "vgg19",
    "lenet5",
    "lenet300",
    "mlpnet",
    "spiral-mlp",
    "mlp",
    "smallcnn",
)

#: Dataset names, in the CLI's spelling (the keys of ``datasets.DATASETS``).
DATASET_NAMES = (
    "cifar10",
    "cifar100",
    "tiny-imagenet",
    "imagenet",
    "mnist",
    "fashion-mnist",
    "cubist-spiral",
    "mnist1d",
)

_LAZY = {
    "MODELS": "models",
    "check_model_options": "models",
    "get_model": "models",
    "maskable_parameters": "models",
    "DATASETS": "datasets",
    "ArrayDataset": "datasets",
    "DatasetSpec": "datasets",
    "cubist_spiral": "datasets",
    "get_spec": "datasets",
    "load_dataset": "datasets",
    "split_train_val": "datasets",
}

__all__ = ["DATASET_NAMES", "MODEL_NAMES", "datasets", "models", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if name in ("models", "datasets"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
