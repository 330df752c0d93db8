"""The resolved configuration of ``masktopo prune``: one frozen dataclass, saved into run.json.

Every option is declared once, here, with :func:`masktopo.options.option`; the ``masktopo prune``
flags, ``--config FILE.toml``, ``--print-config`` and run.json's ``config`` are derived from
these declarations. Light: no torch is imported (``masktopo prune --help``). Defaults follow the
reference (methods-spec §5.3) where it has one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from ..errors import MaskValidationError, UnknownNameError
from ..options import (
    SetupOptions,
    check_bounds,
    check_value,
    fields,
    option,
    same_as,
    to_dict,
)

__all__ = ["METHODS", "SCHEDULES", "STAGE_SOLVERS", "PruneConfig"]

#: Pruning methods: the solvers of :mod:`masktopo.prune.solvers` and the multi-stage CHITA++.
METHODS = ("mp", "bso", "bso-block", "iht", "chita", "chita++")
#: Weights per block of bso-block when ``block_size`` is unset (the reference's ResNet-20 runs).
DEFAULT_BLOCK_SIZE = 500
#: Solvers a CHITA++ stage may run.
STAGE_SOLVERS = ("mp", "bso", "bso-block", "iht", "chita")
#: CHITA++ sparsity schedules from ``base_level`` to the target (methods-spec §5.2, item 6).
SCHEDULES = ("poly", "exp", "linear", "const", "mfac")


@dataclass(frozen=True)
class PruneConfig:
    """Parameters of one ``masktopo prune`` call (every method x every sparsity).

    Each field's meaning and bounds are declared with it (``masktopo prune --help`` and
    ``--print-config`` show them).
    """

    model: str | None = same_as(SetupOptions, "model",
                                default_text="the run's; required for a file")  # fmt: skip
    dataset: str | None = same_as(SetupOptions, "dataset",
                                  default_text="the run's; required for a file")  # fmt: skip
    data_dir: str | None = same_as(SetupOptions, "data_dir")
    method: tuple[str, ...] = option(("chita",), "pruning methods, comma separated: mp (magnitude), "
                                     "bso (backsolve), bso-block, iht, chita (active set), "
                                     "chita++ (multi-stage)", choices=METHODS,
                                     what="pruning method", metavar="NAME",
                                     aliases=("--methods",), usage_choices=True)  # fmt: skip
    sparsity: tuple[float, ...] = option((0.9,), "target sparsities in (0, 1), comma separated: "
                                         "keep round((1 - s) p) of the p maskable weights",
                                         metavar="S")  # fmt: skip
    seed: int = option(0, "seed of the gradient sample (which training samples form G) and of "
                       "magnitude ties", ge=0, metavar="S")  # fmt: skip
    fisher_samples: int = option(1000, "n: rows of the gradient matrix G", ge=1, metavar="N")
    fisher_batch: int = option(1, "m: training samples per row of G (1: per-sample gradients)",
                               ge=1, metavar="M")  # fmt: skip
    l2: float = option(1e-3, "ridge l2 before scaling: lambda2 = l2 * n / 2", ge=0.0, lt=math.inf)
    first_order: bool = option(False, "keep the first-order term alpha = mean gradient (the "
                               "reference's default scripts leave it out)")  # fmt: skip
    alpha_one: bool = option(False, "with first_order: alpha = the sum of the rows, not divided "
                             "by m", flag=False)  # fmt: skip
    max_iter: int = option(500, "IHT iterations per solve (iht, chita)", ge=1, metavar="K")
    ftol: float = option(1e-7, "stop IHT when f decreases by less than this, relatively", ge=0.0,
                         lt=1.0, flag=False)  # fmt: skip
    refit: bool = option(True, "iht, chita: end with the ridge re-fit on the final support (the "
                         "limit of coordinate descent on it)")  # fmt: skip
    keep_zero_columns: bool = option(False, "chita: weights whose column of G is zero (no "
                                     "gradient on any sample) may be kept; the reference prunes "
                                     "them all")  # fmt: skip
    outer_iter: int = option(20, "chita: active-set rounds", ge=1, flag=False)
    kimp: float = option(1.5, "chita: the active set starts with ceil(kimp * k) coordinates",
                         ge=1.0, lt=math.inf, flag=False)  # fmt: skip
    block_size: int | None = option(None, "bso-block: weights per block of a layer (500 when "
                                    "unset; the other methods do not use it and say so)", ge=1,
                                    metavar="B")  # fmt: skip
    stages: int = option(16, "chita++: pruning stages, G recomputed at each", ge=1, metavar="T")
    schedule: Literal["poly", "exp", "linear", "const", "mfac"] = option(
        "poly", "chita++: sparsity schedule from base_level to the target (poly: cubic; exp: "
        "halving gaps; mfac: geometric in density)", what="schedule")  # fmt: skip
    base_level: float = option(0.1, "chita++: sparsity the schedule starts from", ge=0.0, lt=1.0,
                               metavar="S")  # fmt: skip
    stage_solver: Literal["mp", "bso", "bso-block", "iht", "chita"] = option(
        "chita", "chita++: the solver of each stage", what="stage solver")  # fmt: skip
    dtype: Literal["float32", "float64"] = option(
        "float64", "dtype of G and of the solvers (the reference: float64 for chita and iht, "
        "float32 for bso and bso-block)", what="dtype")  # fmt: skip
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where G lives and the solvers run",
                                                    what="device")  # fmt: skip
    chunk: int = option(64, "rows of G per vmapped gradient call (speed/memory only)", ge=1,
                        flag=False)  # fmt: skip
    memory_limit: float | None = option(None, "refuse a gradient matrix above this many GB "
                                        "(default: the device's free memory)", gt=0.0,
                                        lt=math.inf, metavar="GB")  # fmt: skip
    bn_samples: int = option(0, "training samples of the BatchNorm re-estimation pass (0: the "
                             "whole training set); models without BatchNorm skip it", ge=0,
                             flag=False)  # fmt: skip

    def __post_init__(self):
        for f in fields(PruneConfig):
            value = check_value(PruneConfig, f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        if not self.method or not self.sparsity:
            raise MaskValidationError(f"{'method' if not self.method else 'sparsity'} names "
                                      "no value")  # fmt: skip
        for m in self.method:
            if m not in METHODS:
                raise UnknownNameError("pruning method", m, METHODS)
        for s in self.sparsity:
            check_bounds("sparsity", s, gt=0.0, lt=1.0)
        object.__setattr__(self, "sparsity", tuple(sorted(dict.fromkeys(self.sparsity))))

    @property
    def uses_blocks(self) -> bool:
        """Whether a method of this config cuts the weights into blocks (bso-block, or chita++
        with bso-block stages)."""
        return "bso-block" in self.method or (
            "chita++" in self.method and self.stage_solver == "bso-block"
        )

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> PruneConfig:
        return dataclasses.replace(self, **changes)
