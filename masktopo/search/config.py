"""The resolved configurations of ``masktopo search`` and ``masktopo prune-bench``.

Every option is declared once, here, with :func:`masktopo.options.option`; the flags,
``--config FILE.toml``, ``--set``, ``--print-config`` and run.json's ``config`` are derived from
these declarations. Light: no torch is imported (``--help``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..errors import MaskValidationError, UnknownNameError
from ..options import check_value, fields, option, to_dict

__all__ = [
    "PRUNE_METHODS",
    "PruneBenchConfig",
    "SearchConfig",
    "parse_int_grid",
]

#: Learning-rate schedules of the reference (methods-spec §7.2).
SCHEDULE_NAMES = ("cosine", "step", "constant")
#: Pruning methods of the benchmark (methods-spec §7.4).
PRUNE_METHODS = ("gmp", "lth", "snip", "grasp", "synflow", "iter-snip", "force", "rigl", "random")
#: Configuration fields that may change between a search and its ``--resume``.
RESUMABLE_CHANGES = ("device", "models_per_batch", "checkpoint_every", "limit")
#: Input and output widths of every searched network: the Cubist Spiral's two coordinates and
#: one logit (BCE-with-logits, methods-spec §7.2).
SPIRAL_INPUTS, SPIRAL_OUTPUTS = 2, 1


def _known(values, known, what: str) -> None:
    for v in values:
        if v not in known:
            raise UnknownNameError(what, v, known)


def parse_int_grid(text: str, what: str) -> tuple[int, ...]:
    """``"15-26,30,37"`` → ``(15, 16, ..., 26, 30, 37)`` (ranges inclusive, order kept, no
    repeats).

    Raises
    ------
    MaskValidationError
        For an item that is not a positive integer or an ascending range ``a-b``.
    """
    out: list[int] = []
    for item in str(text).replace(" ", "").split(","):
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise MaskValidationError(
                f"{what}: {item!r} is not an integer or a range a-b (e.g. 15-26,30,37)"
            ) from None
        if a < 1 or b < a:
            raise MaskValidationError(f"{what}: {item!r} must be positive and ascending")
        out += [v for v in range(a, b + 1) if v not in out]
    if not out:
        raise MaskValidationError(f"{what}: names no value")
    return tuple(out)


@dataclass(frozen=True)
class SearchConfig:
    """Parameters of one combinatorial search (Algorithm 1, methods-spec §7.3).

    A search trains every (support, setting) pair: phase 1 the dense top-left sub-networks of
    the width-``max_width`` network, phase 2 every support of ``arch`` (docs/search.md).
    """

    phase: int = option(2, "1: dense sub-architectures (d1, d2, d3) of the width-W network; 2: "
                        "every unstructured support inside --arch", ge=1, le=2,
                        metavar="P")  # fmt: skip
    arch: str = option("2-3-3-3-1", "phase 2: the architecture whose supports are searched "
                       "(widths joined by '-': input width 2, one or more hidden layers, output "
                       "width 1; the classifier dense)", metavar="A")  # fmt: skip
    max_width: int = option(16, "phase 1: each hidden width from 1 to W (W³ architectures)",
                            ge=1, metavar="W")  # fmt: skip
    init_width: int = option(16, "models are initialised as the top-left block of a "
                             "width-W spiral MLP (PyTorch's default init, fan-in of W)", ge=1,
                             metavar="W")  # fmt: skip
    fixed_init: bool = option(
        False,
        "every support starts from one shared initialisation "
        "(the reference's fixed-init runs), not one per support",
    )
    joint: bool = option(
        False,
        "phase 2: train each network once modulo hidden-unit "
        "relabellings across layers (12,400 of 2-3-3-3-1's 25,992 supports)",
    )
    target: float = option(0.95, "train accuracy a run must reach to keep its masks", ge=0,
                           le=1, metavar="ACC")  # fmt: skip
    lr: tuple[float, ...] = option((0.05, 0.1), "base learning rates (one setting per lr and "
                                   "schedule)", metavar="LR,...")  # fmt: skip
    schedule: tuple[str, ...] = option(("cosine", "step", "constant"), "learning-rate "
                                       "schedules, per epoch", choices=SCHEDULE_NAMES,
                                       what="schedule", metavar="S,...")  # fmt: skip
    epochs: int = option(50, "epochs of every run (390 steps each)", ge=1, metavar="E")
    batch_size: int = option(128, "minibatch size (the last partial batch is dropped)", ge=1,
                             metavar="N")  # fmt: skip
    seed: int = option(0, "the search seed: initialisations and data orders derive from it",
                       ge=0, metavar="S")  # fmt: skip
    shared_order: bool = option(False, "all models of a batch see the same data order (the "
                                "reference shuffles per run)")  # fmt: skip
    max_weight_nnz: int | None = option(None, "phase 2: only supports with at most K weight "
                                        "nonzeros (the classifier included)", ge=1,
                                        metavar="K")  # fmt: skip
    per_nnz: int | None = option(None, "phase 2: a sample of the search: at most N supports "
                                 "per weight nnz, evenly spaced in index", ge=1,
                                 metavar="N")  # fmt: skip
    sparsest_first: bool = option(
        False,
        "phase 2: order the supports by weight nnz (then "
        "index), so that --limit trains the sparsest first",
    )
    limit: int | None = option(None, "train only the first N runs (support-major order; only "
                               "their keys are listed), at most 10,000,000, the most one search "
                               "trains; a resume may raise it", ge=1, metavar="N")  # fmt: skip
    models_per_batch: int = option(4096, "models trained at once (speed and memory only: "
                                   "results do not depend on it)", ge=1,
                                   metavar="B")  # fmt: skip
    checkpoint_every: int = option(10, "save the batch in training every E epochs (a killed "
                                   "search resumes from there)", ge=1,
                                   metavar="E")  # fmt: skip
    device: Literal["cpu", "cuda"] = option("cpu", "where the models train", what="device")

    def __post_init__(self):
        for f in fields(SearchConfig):
            value = check_value(SearchConfig, f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        from .enumerate import arch_text, parse_arch

        object.__setattr__(self, "arch", arch_text(parse_arch(self.arch)))
        self._check_widths()
        if not self.lr or any(v <= 0 for v in self.lr):
            raise MaskValidationError("lr: give one or more positive learning rates")
        if not self.schedule:
            raise MaskValidationError("schedule: give one or more schedules")
        _known(self.schedule, SCHEDULE_NAMES, "schedule")

    def _check_widths(self) -> None:
        """``arch`` is a Cubist-Spiral network (2 inputs, hidden layers, 1 output) and the
        trained networks fit in the ``init_width`` initialisation."""
        from .enumerate import parse_arch

        arch = parse_arch(self.arch)
        if (arch[0], arch[-1]) != (SPIRAL_INPUTS, SPIRAL_OUTPUTS):
            raise MaskValidationError(
                f"--arch {self.arch}: the Cubist Spiral search needs input width "
                f"{SPIRAL_INPUTS} and output width {SPIRAL_OUTPUTS} (two coordinates, one "
                f"logit), e.g. 2-3-3-3-1; got input width {arch[0]} and output width {arch[-1]}"
            )
        if len(arch) < 3:
            raise MaskValidationError(
                f"--arch {self.arch}: needs at least one hidden layer (e.g. 2-3-3-3-1)"
            )
        if self.phase == 1 and self.init_width < self.max_width:
            raise MaskValidationError(
                f"init_width {self.init_width} is smaller than max_width {self.max_width}"
            )
        if self.phase == 2 and max(arch[1:-1]) > self.init_width:
            raise MaskValidationError(
                f"--arch {self.arch} does not fit in init_width {self.init_width}"
            )

    def settings(self) -> list[tuple[float, str]]:
        """The (lr, schedule) settings, lr-major."""
        return [(lr, s) for lr in self.lr for s in self.schedule]

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> SearchConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class PruneBenchConfig:
    """Parameters of the pruning benchmark on the Cubist Spiral (methods-spec §7.4)."""

    methods: tuple[str, ...] = option(("gmp", "lth", "snip", "grasp", "synflow", "iter-snip",
                                       "force", "rigl"), "pruning methods",
                                      choices=PRUNE_METHODS, what="pruning method",
                                      metavar="M,...")  # fmt: skip
    nnz: str = option("15-26,30,33,37,40,44,50,53,55,57,60,65", "weight budgets K (kept "
                      "exactly), ranges allowed; K >= N is skipped", metavar="K,...")  # fmt: skip
    widths: str = option("3,16", "widths w of the 2-w-w-w-1 networks", metavar="W,...")
    seeds: int = option(3, "seeds per (method, width, K, setting)", ge=1, metavar="S")
    seed: int = option(0, "the first seed", ge=0, metavar="S")
    lr: tuple[float, ...] = option((0.1,), "base learning rates", metavar="LR,...")
    schedule: tuple[str, ...] = option(("cosine",), "learning-rate schedules",
                                       choices=SCHEDULE_NAMES, what="schedule",
                                       metavar="S,...")  # fmt: skip
    fixed_init: bool = option(
        False,
        "every run starts from the top-left block of one "
        "shared width-16 initialisation per seed (the reference's "
        "fixed-init benchmark), not its own width-w one",
    )
    xavier_reinit: bool = option(
        True,
        "snip and grasp re-initialise the weights Xavier-normal before scoring and train from "
        "them, as the reference's random-init benchmark (not with --fixed-init)",
    )
    epochs: int = option(50, "epochs of training (LTH: per round, 5 rounds)", ge=1,
                         metavar="E")  # fmt: skip
    target: float = option(0.95, "train accuracy that counts as solved", ge=0, le=1,
                           metavar="ACC")  # fmt: skip
    device: Literal["cpu", "cuda"] = option("cpu", "where the models train", what="device")

    def __post_init__(self):
        for f in fields(PruneBenchConfig):
            value = check_value(PruneBenchConfig, f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.nnz_grid()
        self.width_list()
        _known(self.schedule, SCHEDULE_NAMES, "schedule")
        _known(self.methods, PRUNE_METHODS, "pruning method")
        if not self.methods:
            raise MaskValidationError("methods: give one or more pruning methods")

    def nnz_grid(self) -> tuple[int, ...]:
        return parse_int_grid(self.nnz, "nnz")

    def width_list(self) -> tuple[int, ...]:
        return parse_int_grid(self.widths, "widths")

    def settings(self) -> list[tuple[float, str]]:
        return [(lr, s) for lr in self.lr for s in self.schedule]

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PruneBenchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
