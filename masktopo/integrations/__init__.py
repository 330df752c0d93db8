"""Callbacks that run :func:`masktopo.sparsify` inside another library's trainer.

Each module needs its library (an optional extra); importing this package imports neither:

- :mod:`masktopo.integrations.lightning`: ``MaskTopoCallback`` for Lightning's ``Trainer``
  (``pip install masktopo[lightning]``); resumes with ``trainer.fit(..., ckpt_path=...)``.
- :mod:`masktopo.integrations.transformers`: ``MaskTopoCallback`` for Hugging Face's
  ``transformers.Trainer`` (``pip install masktopo[transformers]``).

Both write the same ``loop`` run directory as :func:`masktopo.sparsify`, which
``masktopo analyze``, ``plot`` and ``report`` read::

    from masktopo.integrations.lightning import MaskTopoCallback

    trainer = lightning.Trainer(max_steps=10_000, callbacks=[
        MaskTopoCallback("rigl", out="runs/rigl", density=0.1, update_interval=100)])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..checks import is_int, is_number

#: The keywords of :func:`masktopo.sparsify` a callback passes on besides its method options.
_LOOP_KEYWORDS = (
    "total_steps",
    "steps_per_epoch",
    "layers",
    "exclude",
    "batches",
    "example_inputs",
)


def _sparsify_options(
    method: str, density: float | None, options: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """The keywords for :func:`masktopo.sparsify`, checked now (not at the first step).

    Raises
    ------
    MaskValidationError
        An unknown keyword, ``resume=`` (the trainer decides), a missing ``density``, or a method
        option that is unknown, out of range or not used by the method.
    """
    from ..errors import MaskValidationError
    from ..trainer.config import TrainConfig, resolve
    from ..userloop import SPARSIFY_OPTIONS

    if "resume" in options:
        raise MaskValidationError(
            f"{where}: resume= is not an option here; the trainer's own resume decides it"
        )
    unknown = sorted(set(options) - set(SPARSIFY_OPTIONS) - set(_LOOP_KEYWORDS))
    if unknown:
        raise MaskValidationError(
            f"{where}: {', '.join(map(repr, unknown))} is not a sparsify option; it takes "
            f"{', '.join((*SPARSIFY_OPTIONS, *_LOOP_KEYWORDS))}"
        )
    for key in ("total_steps", "steps_per_epoch"):  # 0 would fall back to the trainer's count
        value = options.get(key)
        if value is not None and (not is_int(value) or value < 1):
            raise MaskValidationError(f"{where}: {key} must be a positive integer, got {value!r}")
    from ..userloop import check_example_inputs

    check_example_inputs(options.get("example_inputs"), where)
    out = dict(options)
    if density is not None:
        out["density"] = density
    if "density" not in out:
        if method != "dense":
            raise MaskValidationError(f"{where}: method {method!r} needs density=")
        out["density"] = 1.0  # sparsify(method="dense") alone takes TrainConfig's 0.05 and fails
    resolve(TrainConfig(method=method, **{k: v for k, v in out.items() if k in SPARSIFY_OPTIONS}))
    return out


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite real scalars of ``values`` (one-element tensors included) as floats, less the
    names of an event's own columns (``step``, ``epoch``, ``density``, ...), which a metric of
    that name would overwrite in events.jsonl."""
    import torch

    from ..runs import EVENT_FIELDS

    reserved = {*EVENT_FIELDS, "density"}
    out = {}
    for key, v in values.items():
        if str(key) in reserved:
            continue
        if isinstance(v, torch.Tensor):
            if v.numel() != 1 or v.is_complex():
                continue
            v = v.item()
        if not is_number(v):
            continue
        if math.isfinite(float(v)):
            out[str(key)] = float(v)
    return out
