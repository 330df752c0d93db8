"""The resolved configuration of a training run: one frozen dataclass, saved into run.json.

Every option is declared once, here, with :func:`masktopo.options.option` (its help, bounds and
known names); the ``masktopo train`` flags, ``--config FILE.toml``, ``--print-config`` and
run.json's ``config`` are derived from these declarations. A :class:`TrainConfig` is built from
defaults, a TOML file (:func:`load_toml`) and command-line overrides, in that order, each value
checked where it came from; :func:`resolve` then fills every field the method decides (``None``
means "the method's default": each method class's ``defaults``, see :data:`METHOD_DEFAULTS`) and
checks the values together. A field that the chosen method does not use must stay unset:
``--growth`` with ``--method static`` is an error, not a silently ignored flag.

Methods (methods-spec §2, §3, §4, §6.3):

========= ================================================================================
dense     no mask (the baseline of the step-time benchmark)
static    a fixed mask: a PaI method (``init_method``, default ERK) or a mask file
itop      ITOP (SET-ITOP by default; ``growth="gradient"`` is RigL-ITOP): ERK start, magnitude
          drop, regrowth, cosine drop rate 0.5 -> 0.005 over the whole run, updates never stop
set       ITOP's core with random growth (SET in ITOP form)
rigl      the RigL paper's schedule: gradient growth, alpha = 0.3, cosine to 0 at 75% of
          training, optimizer step skipped on update steps, delta T = 100
gmp       gradual magnitude pruning on the cubic schedule (dense start), global or per layer
granet    GMP plus zero-cost neuroregeneration at every update (gradient growth); dense-to-sparse
          (``init_density = 1``) or sparse-to-sparse (``init_density < 1``, ERK start)
gap       scheduled grow-and-prune over partitions of the layers: C-GaP (cyclic) or P-GaP
          (parallel replicas, one per process under torchrun); ``epochs`` from its schedule
========= ================================================================================
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import MaskValidationError
from ..options import (
    SetupOptions,
    check_bounds,
    check_value,
    fields,
    from_values,
    option,
    read_toml,
    same_as,
    to_dict,
    tomllib,
)

__all__ = [
    "FIELDS",
    "METHOD_FIELDS",
    "RESUMABLE_CHANGES",
    "TrainConfig",
    "from_dict",
    "load_toml",
    "resolve",
    "tomllib",
]


def _methods() -> tuple[str, ...]:
    from .methods import METHODS

    return tuple(METHODS)


def _growths() -> tuple[str, ...]:
    from .core import GROWTHS

    return tuple(GROWTHS)


def _drops() -> tuple[str, ...]:
    from .core import DROPS

    return tuple(DROPS)


def _distributions() -> tuple[str, ...]:
    from ..pai.densities import DISTRIBUTIONS

    return tuple(DISTRIBUTIONS)


def _pai_methods() -> tuple[str, ...]:
    from .. import pai

    return tuple(pai.METHODS)


_BY_METHOD = "the method's; see --list-methods"

#: Fields that may differ between a run and its ``--resume`` (they do not change the result).
RESUMABLE_CHANGES = (
    "device",
    "data_dir",
    "num_workers",
    "max_steps",
    "checkpoint_every",
    "tensorboard",
    "wandb",
    "wandb_project",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (methods-spec §1-3, §6.3).

    Each field's meaning, bounds and known values are declared with it (``masktopo train
    --help`` and ``--print-config`` show them). Notes beyond one line:

    - ``lr_schedule``: ``step`` multiplies the LR by ``lr_gamma`` at each fraction of training in
      ``lr_milestones``; ``cosine`` decays to 0; warm-up rises linearly from ``lr / 10``.
    - ``augment``: ``crop-flip`` is the CIFAR recipe (random 4-pixel-padded crop and horizontal
      flip); ``auto`` uses it for 3-channel images of side >= 32 and nothing otherwise.
    - ``rate``, ``rate_min``: drop rate at step 0 and its floor, cosine decay ``p_t = p_min +
      (p0 - p_min) (1 + cos(pi t / T)) / 2`` over the horizon ``update_end`` (the whole run when
      None), after which the mask stops changing (RigL's T_end = 0.75).
    - ``reinit_when_same``: RigL TF's option; default False, a weight dropped and regrown in the
      same update keeps its value (methods-spec §1.4).
    - ``amp``, ``channels_last``: default on for CUDA (the convnets), off on the CPU.
    - ``dump_weights``: the weights are stored at the kept positions only (1 % of a dense dump at
      99 % sparsity), at every event by default so that weighted metrics exist over training.
    """

    method: str = option("static", "sparsification method", choices=_methods, what="method",
                         metavar="NAME")  # fmt: skip
    model: str = same_as(SetupOptions, "model", default="lenet300")
    dataset: str = same_as(SetupOptions, "dataset", default="fashion-mnist")
    width: int | None = same_as(SetupOptions, "width")
    data_dir: str | None = same_as(SetupOptions, "data_dir")
    density: float = same_as(SetupOptions, "density")
    epochs: int | None = option(None, "training epochs (schedules span them)", ge=1,
                                default_text="10; gap: its schedule's length", metavar="N")  # fmt: skip
    max_steps: int | None = option(None, "stop after this many steps (schedules keep their "
                                   "length)", ge=1, metavar="N")  # fmt: skip
    batch_size: int = option(128, "global minibatch size (split across torchrun processes)",
                             ge=1, metavar="B")  # fmt: skip
    optimizer: Literal["sgd", "adamw"] = option("sgd", "sgd (momentum, Nesterov) or adamw "
                                                "(decoupled decay)", what="optimizer")  # fmt: skip
    lr: float = option(0.1, "peak learning rate", gt=0.0, lt=math.inf)
    momentum: float = option(0.9, "SGD momentum (AdamW ignores it)", ge=0.0, lt=1.0, flag=False)
    nesterov: bool = option(True, "Nesterov momentum (SGD)", flag=False)
    weight_decay: float = option(5e-4, "weight decay (AdamW: decoupled)", ge=0.0, lt=math.inf,
                                 flag=False)  # fmt: skip
    lr_schedule: Literal["step", "cosine", "constant"] = option(
        "step", "step, cosine or constant", what="lr schedule", flag=False)  # fmt: skip
    lr_milestones: tuple[float, ...] = option((0.5, 0.75), "fractions of training where the step "
                                              "schedule multiplies the LR by lr_gamma",
                                              flag=False)  # fmt: skip
    lr_gamma: float = option(0.1, "LR factor at each milestone", gt=0.0, le=1.0, flag=False)
    warmup_epochs: float = option(0.0, "linear warm-up from lr/10 over these epochs", ge=0.0,
                                  flag=False)  # fmt: skip
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", ge=0.0, lt=1.0,
                                    flag=False)  # fmt: skip
    val_fraction: float = option(0.1, "fraction of the training set held out for validation "
                                 "(never the test set)", ge=0.0, lt=1.0, flag=False)  # fmt: skip
    augment: Literal["auto", "none", "crop-flip"] = option(
        "auto", "auto, none or crop-flip", what="augmentation", flag=False)  # fmt: skip
    init_method: str | None = option(None, "static: the PaI method of the mask",
                                     choices=_pai_methods, what="PaI method",
                                     default_text=_BY_METHOD, metavar="NAME")  # fmt: skip
    init_masks: str | None = option(None, "static: a mask file to train (e.g. "
                                    "pags/best.safetensors), or a PAGS run directory (its best "
                                    "masks and the exact network it scored)",
                                    metavar="FILE")  # fmt: skip
    init_weights: str | None = option(None, "start from these weights: a safetensors file of the "
                                      "model's whole state (parameters and buffers), e.g. a PAGS "
                                      "run's init.safetensors", metavar="FILE",
                                      default_text="the model's initialisation from seed")  # fmt: skip
    score_batches: int | None = same_as(SetupOptions, "score_batches",
                                        help="static: minibatches (of batch_size) a data-driven "
                                        "PaI method scores on",
                                        default_text="the whole training split")  # fmt: skip
    pai_rounds: int | None = same_as(SetupOptions, "pai_rounds",
                                     help="static: pruning rounds of an iterative PaI method "
                                     "(synflow, iter-snip, force)")  # fmt: skip
    shuffle_masks: bool = option(False, "static: permute each layer's PaI mask at random, "
                                 "keeping its count (Frankle et al. 2021's control: the layer "
                                 "densities without the chosen weights)", flag=False)  # fmt: skip
    distribution: str | None = option(None, "layer densities of the sparse start",
                                      choices=_distributions, what="distribution",
                                      default_text=_BY_METHOD, flag=False)  # fmt: skip
    update_interval: int | None = option(None, "delta T: steps between mask updates", ge=1,
                                         default_text=_BY_METHOD, metavar="STEPS")  # fmt: skip
    growth: str | None = option(None, "regrowth rule", choices=_growths, what="growth",
                                default_text=_BY_METHOD, metavar="RULE")  # fmt: skip
    drop: str | None = option(None, "drop rule", choices=_drops, what="drop",
                              default_text=_BY_METHOD, flag=False)  # fmt: skip
    rate: float | None = option(None, "drop rate at step 0", ge=0.0, le=1.0,
                                default_text=_BY_METHOD, flag=False)  # fmt: skip
    rate_min: float | None = option(None, "floor of the cosine drop rate", ge=0.0,
                                    default_text=_BY_METHOD, flag=False)  # fmt: skip
    update_end: float | None = option(None, "fraction of training after which the mask stops "
                                      "changing (also the cosine horizon)", gt=0.0, le=1.0,
                                      default_text=_BY_METHOD, flag=False)  # fmt: skip
    skip_step_on_update: bool | None = option(None, "skip the optimizer step on update steps "
                                              "(RigL)", default_text=_BY_METHOD, flag=False)  # fmt: skip
    reinit_when_same: bool | None = option(None, "zero a weight dropped and regrown in the "
                                           "same update", default_text=_BY_METHOD, flag=False)  # fmt: skip
    init_density: float | None = option(None, "gmp/granet: density before pruning (1 = dense)",
                                        gt=0.0, le=1.0, default_text=_BY_METHOD, metavar="D")  # fmt: skip
    prune_start: float | None = option(None, "gmp/granet: fraction of training where pruning "
                                       "starts", ge=0.0, lt=1.0, default_text=_BY_METHOD,
                                       flag=False)  # fmt: skip
    prune_end: float | None = option(None, "gmp/granet: fraction of training where the "
                                     "density reaches its target", default_text=_BY_METHOD,
                                     flag=False)  # fmt: skip
    prune_scope: Literal["global", "layer"] | None = option(
        None, "gmp/granet: one magnitude threshold (global) or one per layer (layer)",
        what="prune scope", default_text=_BY_METHOD, flag=False)  # fmt: skip
    gap_mode: Literal["cyclic", "parallel"] | None = option(
        None, "gap: cyclic (C-GaP) or parallel (P-GaP)", what="gap mode",
        default_text=_BY_METHOD, metavar="MODE")  # fmt: skip
    partitions: int | None = option(None, "gap: split the maskable layers into K contiguous "
                                    "partitions balanced by parameter count", ge=1,
                                    default_text="3 unless partition_map", metavar="K")  # fmt: skip
    partition_map: dict[str, int] | None = option(  # noqa: RUF009 - None, copied when set
        None, "gap: {layer-name pattern = partition id} (a TOML table), instead of partitions",
        flag=False)  # fmt: skip
    step_epochs: float | None = option(None, "gap: epochs of one grow-and-prune step (fractions "
                                       "allowed)", gt=0.0, lt=math.inf, default_text=_BY_METHOD,
                                       metavar="E")  # fmt: skip
    cycles: int | None = option(None, "gap: full cycles over the partitions (P-GaP: rounds)",
                                ge=1, default_text=_BY_METHOD, metavar="C")  # fmt: skip
    finetune_epochs: float | None = option(None, "gap: epochs of fine-tuning with every mask "
                                           "fixed after the last prune", ge=0.0, lt=math.inf,
                                           default_text=_BY_METHOD, metavar="E")  # fmt: skip
    gap_restart: bool | None = option(None, "gap: clear the optimizer state and restart the LR "
                                      "schedule at every step (the reference's restart)",
                                      default_text=_BY_METHOD, flag=False)  # fmt: skip
    gap_combine: Literal["average", "first"] | None = option(
        None, "gap parallel: the parameters outside the partitions from the replicas' average "
        "or from replica 0 (first)", what="gap combine rule", default_text=_BY_METHOD,
        flag=False)  # fmt: skip
    chita_samples: int | None = option(None, "chita: gradient rows n of each prune event",
                                       ge=1, default_text=_BY_METHOD, metavar="N")  # fmt: skip
    chita_batch: int | None = option(None, "chita: training samples per gradient row (m)", ge=1,
                                     default_text=_BY_METHOD, flag=False)  # fmt: skip
    chita_stages: int | None = option(None, "chita: CHITA++ stages of each prune event", ge=1,
                                      default_text=_BY_METHOD, flag=False)  # fmt: skip
    chita_solver: Literal["mp", "bso", "bso-block", "iht", "chita"] | None = option(
        None, "chita: the solver of each stage (masktopo prune's methods)", what="chita solver",
        default_text=_BY_METHOD, flag=False)  # fmt: skip
    chita_restart: bool | None = option(None, "chita: restart the LR schedule after every prune "
                                        "event (the reference's cosine restarts)",
                                        default_text=_BY_METHOD, flag=False)  # fmt: skip
    chita_keep_zero_columns: bool | None = option(
        None, "chita: weights whose column of G is zero (no gradient on any sample) may be "
        "kept; the reference prunes them all", default_text=_BY_METHOD, flag=False)  # fmt: skip
    first_dense: bool = option(False, "keep the first (stem) maskable layer dense", flag=False)
    last_dense: bool = option(False, "keep the last (classifier) maskable layer dense",
                              flag=False)  # fmt: skip
    mask_adam: bool = option(False, "also zero AdamW's moments at masked entries", flag=False)
    seed: int = same_as(SetupOptions, "seed")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "auto, cpu or cuda",
                                                    what="device")  # fmt: skip
    amp: bool | None = option(None, "bfloat16 autocast", default_text="on for CUDA",
                              flag=False)  # fmt: skip
    channels_last: bool | None = option(None, "channels-last memory format",
                                        default_text="on for CUDA images", flag=False)  # fmt: skip
    eval_every: int = option(1, "evaluate on the validation split every this many epochs (and "
                             "at the end)", ge=1, flag=False)  # fmt: skip
    dump_weights: Literal["all", "ends", "none"] = option(
        "all", "weights in the event files, at the kept positions: all (every event), ends (init "
        "and final) or none", what="dump_weights", metavar="WHEN")  # fmt: skip
    checkpoint_every: int = option(500, "steps between checkpoints within an epoch (0: only at "
                                   "epoch ends); a killed run resumes from the last one", ge=0,
                                   metavar="STEPS")  # fmt: skip
    tensorboard: bool = option(False, "also log the scalars for TensorBoard into RUN/tensorboard/ "
                               "(needs the tensorboard package)")  # fmt: skip
    wandb: bool = option(False, "also log the scalars to Weights & Biases (pip install "
                         "masktopo[wandb]; WANDB_MODE=offline works without an account)")  # fmt: skip
    wandb_project: str | None = option(None, "the Weights & Biases project of --wandb",
                                       default_text="WANDB_PROJECT or wandb's own",
                                       metavar="NAME")  # fmt: skip
    num_workers: int = option(0, "unused by the in-memory loader; kept for configs that name it",
                              ge=0, flag=False)  # fmt: skip
    resolved: bool = field(default=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every option (tuples become lists): run.json's ``config``."""
        return to_dict(self)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` (unknown field names are an error listing the known ones)."""
        check_keys(changes, "option")
        return dataclasses.replace(self, **changes, resolved=False)


FIELDS = tuple(f.name for f in fields(TrainConfig))
#: Fields that only some methods use: each method class's ``defaults`` names those it uses.
METHOD_FIELDS = (
    "init_method",
    "distribution",
    "update_interval",
    "growth",
    "drop",
    "rate",
    "rate_min",
    "update_end",
    "skip_step_on_update",
    "reinit_when_same",
    "init_density",
    "prune_start",
    "prune_end",
    "prune_scope",
    "gap_mode",
    "partitions",
    "partition_map",
    "step_epochs",
    "cycles",
    "finetune_epochs",
    "gap_restart",
    "gap_combine",
    "chita_samples",
    "chita_batch",
    "chita_stages",
    "chita_solver",
    "chita_restart",
    "chita_keep_zero_columns",
)


def __getattr__(name: str):
    """``METHODS`` (names) and ``METHOD_DEFAULTS`` (name -> defaults), read from the methods'
    registry (:mod:`masktopo.trainer.methods`) on first use."""
    if name in ("METHODS", "METHOD_DEFAULTS"):
        from .methods import METHODS

        return tuple(METHODS) if name == "METHODS" else {
            n: dict(cls.defaults) for n, cls in METHODS.items()
        }  # fmt: skip
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_keys(changes: dict, what: str, where: str | None = None) -> None:
    """Every key of ``changes`` is an option (else one line listing the known ones)."""
    for key in changes:
        if key not in FIELDS:
            prefix = f"{where}: " if where else ""
            raise MaskValidationError(f"{prefix}unknown {what} {key!r}; known: {', '.join(FIELDS)}")


def from_dict(data: dict[str, Any], *, where: str | None = None) -> TrainConfig:
    """A config from a dict of field values (e.g. run.json's ``config``), type-checked."""
    check_keys(data, "config key", where)
    return from_values(TrainConfig, data, where)


def load_toml(path: str | Path, **overrides) -> TrainConfig:
    """Read a TOML config: top-level keys (or a ``[train]`` table) are :class:`TrainConfig`
    fields; ``overrides`` (e.g. from the command line) win over the file."""
    cfg = from_dict(read_toml(path, "train"), where=str(path))
    return cfg.replace(**overrides) if overrides else cfg


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the method's defaults and check every value; returns a config with ``resolved``.

    Each field alone is checked by its declaration (type, bounds, known names); this adds what
    involves several fields (method-specific fields, warm-up within the run, rate_min <= rate,
    ...).

    Raises
    ------
    UnknownNameError
        Unknown method, model, dataset, optimizer, schedule, growth, ... (lists the known ones).
    MaskValidationError
        A value out of range, or a method-specific field set for a method that does not use it.
    """
    if cfg.resolved:
        return cfg
    for f in fields(TrainConfig):
        check_value(TrainConfig, f.name, getattr(cfg, f.name))
    from .methods import METHODS

    defaults = METHODS[cfg.method].defaults
    changes: dict[str, Any] = {}
    for key in METHOD_FIELDS:
        value = getattr(cfg, key)
        if key not in defaults:
            if value is not None:
                users = [m for m, c in METHODS.items() if key in c.defaults]
                raise MaskValidationError(
                    f"{key} is not used by method {cfg.method!r} (it applies to: "
                    f"{', '.join(users)})"
                )
        elif value is None:
            changes[key] = defaults[key]
    for key in ("score_batches", "pai_rounds", "shuffle_masks"):
        if getattr(cfg, key) not in (None, False) and cfg.method != "static":
            raise MaskValidationError(f"{key} is only used by method 'static' (its PaI mask), not "
                                      f"{cfg.method!r}")  # fmt: skip
    if cfg.init_masks is not None and cfg.method not in ("static", "gap"):
        raise MaskValidationError(f"init_masks is only used by methods 'static' and 'gap', not "
                                  f"{cfg.method!r}")  # fmt: skip
    if cfg.method == "static" and cfg.init_masks is not None and cfg.init_method is not None:
        raise MaskValidationError("static: give init_method or init_masks, not both")
    if cfg.method == "static" and cfg.init_masks is not None:
        changes["init_method"] = None
    out = dataclasses.replace(cfg, **changes)
    out = dataclasses.replace(out, **METHODS[cfg.method].resolve(out))
    if out.epochs is None:
        out = dataclasses.replace(out, epochs=10)

    if out.width is not None:  # before any data is read (get_model checks it again)
        from ..zoo import check_model_options

        check_model_options(out.model, {"width": out.width})
    if out.method == "dense" and out.density != 1.0:
        raise MaskValidationError(f"method 'dense' trains every weight: density must be 1, got "
                                  f"{out.density!r}")  # fmt: skip
    check_bounds("warmup_epochs", out.warmup_epochs, ge=0.0, le=float(out.epochs))
    for m in out.lr_milestones:
        check_bounds("each lr milestone", m, gt=0.0, lt=1.0)
    if list(out.lr_milestones) != sorted(out.lr_milestones):
        raise MaskValidationError(f"lr_milestones must be increasing, got {out.lr_milestones}")
    if out.nesterov and out.optimizer == "sgd" and out.momentum == 0:
        raise MaskValidationError("nesterov needs momentum > 0")
    if out.rate_min is not None:
        check_bounds("rate_min", out.rate_min, ge=0.0, le=out.rate)
    if out.init_density is not None and out.init_density < out.density:
        raise MaskValidationError(f"init_density ({out.init_density}) must be >= density "
                                  f"({out.density})")  # fmt: skip
    if out.prune_start is not None:
        check_bounds("prune_end", out.prune_end, gt=out.prune_start, le=1.0)
    return dataclasses.replace(out, resolved=True)
