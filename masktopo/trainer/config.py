"""The resolved configuration of a training run: one frozen dataclass, saved into run.json.

A :class:`TrainConfig` is built from defaults, a TOML file (:func:`load_toml`) and command-line
overrides, in that order; :func:`resolve` then fills every field the method decides (``None``
means "the method's default", see :data:`METHOD_DEFAULTS`) and checks every value. A field that
the chosen method does not use must stay unset: ``--growth`` with ``--method static`` is an error,
not a silently ignored flag.

Methods (methods-spec §2, §3, §6.3):

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
========= ================================================================================
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MaskFileError, MaskValidationError, UnknownNameError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

METHODS = ("dense", "static", "itop", "set", "rigl", "gmp", "granet")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "cosine", "constant")
GROWTHS = ("random", "gradient", "momentum", "random_unfired")
DROPS = ("magnitude", "set")
DISTRIBUTIONS = ("erk", "er", "uniform")
SCOPES = ("global", "layer")
AUGMENTS = ("auto", "none", "crop-flip")
DEVICES = ("auto", "cpu", "cuda")
DUMP_WEIGHTS = ("all", "ends", "none")

#: Fields that only some methods use, and the methods' defaults for them. A field missing from a
#: method's dict is not used by that method and must be left unset (None).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "dense": {},
    "static": {"init_method": "erk"},
    "itop": {
        "distribution": "erk",
        "update_interval": 1500,
        "growth": "random",
        "drop": "magnitude",
        "rate": 0.5,
        "rate_min": 0.005,
        "update_end": None,
        "skip_step_on_update": False,
        "reinit_when_same": False,
    },
    "rigl": {
        "distribution": "erk",
        "update_interval": 100,
        "growth": "gradient",
        "drop": "magnitude",
        "rate": 0.3,
        "rate_min": 0.0,
        "update_end": 0.75,
        "skip_step_on_update": True,
        "reinit_when_same": False,
    },
    "gmp": {
        "update_interval": 1000,
        "init_density": 1.0,
        "distribution": "erk",
        "prune_start": 0.0,
        "prune_end": 0.5,
        "prune_scope": "global",
    },
    "granet": {
        "update_interval": 1000,
        "init_density": 1.0,
        "distribution": "erk",
        "prune_start": 0.0,
        "prune_end": 0.5,
        "prune_scope": "global",
        "growth": "gradient",
        "drop": "magnitude",
        "rate": 0.5,
        "rate_min": 0.005,
        "reinit_when_same": False,
    },
}
#: SET in ITOP form is ITOP with its default (random) growth, under its own name.
METHOD_DEFAULTS["set"] = dict(METHOD_DEFAULTS["itop"])
#: The fields in :data:`METHOD_DEFAULTS` (method-specific).
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
)
#: Fields that may differ between a run and its ``--resume`` (they do not change the result).
RESUMABLE_CHANGES = ("device", "data_dir", "num_workers", "max_steps", "checkpoint_every")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (methods-spec §1-3, §6.3).

    Attributes
    ----------
    method : str
        One of :data:`METHODS`.
    model, dataset : str
        Zoo model and dataset names (``masktopo.zoo``).
    data_dir : str, optional
        Where the dataset's files are (default: the dataset's standard location).
    density : float
        Final density of the maskable weights, in (0, 1]. ``dense`` needs 1.
    epochs : int
        Training epochs (schedules are laid out over ``epochs * steps_per_epoch`` steps).
    max_steps : int, optional
        Stop after this many steps (schedules still span the full ``epochs``); for quick checks.
    batch_size : int
        Minibatch size (the global batch under ``torchrun``: each rank takes its share).
    optimizer : {"sgd", "adamw"}
    lr, momentum, nesterov, weight_decay : float, float, bool, float
        SGD with momentum 0.9, Nesterov and weight decay 5e-4 as in ITOP/GraNet; AdamW uses
        ``weight_decay`` as its decoupled decay and ignores ``momentum``/``nesterov``.
    lr_schedule : {"step", "cosine", "constant"}
        ``step``: multiply by ``lr_gamma`` at each fraction of training in ``lr_milestones``.
    lr_milestones : tuple of float
        Fractions of the total steps (default 0.5 and 0.75, the ITOP/GraNet milestones).
    lr_gamma : float
    warmup_epochs : float
        Linear warm-up from ``lr / 10`` over these epochs (ImageNet recipes use 5).
    label_smoothing : float
    val_fraction : float
        Fraction of the training set held out for validation (never the test set), in [0, 1).
    augment : {"auto", "none", "crop-flip"}
        ``crop-flip``: random 4-pixel-padded crop and horizontal flip (the CIFAR recipe);
        ``auto`` uses it for 3-channel images of side >= 32 and nothing otherwise.
    init_method : str, optional
        ``static``: the PaI method of the fixed mask (a ``masktopo.pai`` name).
    init_masks : str, optional
        ``static``: a mask file (e.g. PAGS's ``best.safetensors``); its initial weights, when it
        has them, replace the model's.
    distribution : {"erk", "er", "uniform"}, optional
        Layer densities of the sparse start (RigL's ERK algorithm, methods-spec §1.6).
    update_interval : int, optional
        Delta T: steps between mask updates (DST, GMP and GraNet events).
    growth : {"random", "gradient", "momentum", "random_unfired"}, optional
    drop : {"magnitude", "set"}, optional
    rate, rate_min : float, optional
        Drop (death/regeneration) rate at step 0 and its floor: cosine decay
        ``p_t = p_min + (p0 - p_min) (1 + cos(pi t / T)) / 2``.
    update_end : float, optional
        Fraction of training after which the mask stops changing (RigL's T_end = 0.75); None:
        never (ITOP); also the horizon T of the cosine decay (the whole run when None).
    skip_step_on_update : bool, optional
        Skip the optimizer step on update steps (RigL).
    reinit_when_same : bool, optional
        Zero a weight dropped and regrown in the same update (RigL TF's option; default False:
        it keeps its value, methods-spec §1.4).
    init_density : float, optional
        GMP/GraNet: density at the start of pruning (1 = dense-to-sparse).
    prune_start, prune_end : float, optional
        GMP/GraNet: fractions of training where the cubic schedule starts and reaches
        ``density``.
    prune_scope : {"global", "layer"}, optional
        GMP/GraNet: one magnitude threshold over all layers, or per layer.
    first_dense, last_dense : bool
        Keep the first (stem) / last (classifier) maskable layer dense.
    mask_adam : bool
        Also zero AdamW's moments at masked entries (ITOP/GraNet do not).
    seed : int
        Seeds every generator (model init, masks, data order, growth, augmentation).
    device : {"auto", "cpu", "cuda"}
    amp, channels_last : bool, optional
        Mixed precision (bfloat16 autocast) and channels-last memory format; default: on for CUDA
        (the convnets), off on the CPU.
    eval_every : int
        Evaluate on the validation split every this many epochs (and always at the end).
    dump_weights : {"all", "ends", "none"}
        Weights in the mask files, stored at the kept positions only (1 % of a dense dump at 99 %
        sparsity): at every event (default, so that weighted metrics exist over training), at
        ``init`` and ``final`` only, or never.
    checkpoint_every : int
        Steps between checkpoints within an epoch (0: only at the end of each epoch), so that a
        run killed at any point loses at most this many steps; the end of every epoch is a
        checkpoint too.
    num_workers : int
        Unused by the in-memory loader; kept for configs that name it (must be >= 0).
    """

    method: str = "static"
    model: str = "lenet300"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    density: float = 0.05
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = "step"
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    val_fraction: float = 0.1
    augment: str = "auto"
    init_method: str | None = None
    init_masks: str | None = None
    distribution: str | None = None
    update_interval: int | None = None
    growth: str | None = None
    drop: str | None = None
    rate: float | None = None
    rate_min: float | None = None
    update_end: float | None = None
    skip_step_on_update: bool | None = None
    reinit_when_same: bool | None = None
    init_density: float | None = None
    prune_start: float | None = None
    prune_end: float | None = None
    prune_scope: str | None = None
    first_dense: bool = False
    last_dense: bool = False
    mask_adam: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    eval_every: int = 1
    dump_weights: str = "all"
    checkpoint_every: int = 500
    num_workers: int = 0
    resolved: bool = field(default=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (tuples become lists)."""
        out = dataclasses.asdict(self)
        out.pop("resolved")
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` (unknown field names are an error listing the known ones)."""
        check_keys(changes, "option")
        return dataclasses.replace(self, **changes, resolved=False)


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "resolved")
_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def check_keys(changes: dict, what: str, where: str | None = None) -> None:
    for key in changes:
        if key not in FIELDS:
            prefix = f"{where}: " if where else ""
            known = ", ".join(FIELDS)
            raise MaskValidationError(f"{prefix}unknown {what} {key!r}; known: {known}")


def from_dict(data: dict[str, Any], *, where: str | None = None) -> TrainConfig:
    """A config from a dict of field values (e.g. run.json's ``config``), type-checked."""
    check_keys(data, "config key", where)
    values = {k: coerce(k, v, where) for k, v in data.items()}
    return TrainConfig(**values)


def load_toml(path: str | Path, **overrides) -> TrainConfig:
    """Read a TOML config: top-level keys (or a ``[train]`` table) are :class:`TrainConfig`
    fields; ``overrides`` (e.g. from the command line) win over the file."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise MaskFileError(p, "config file not found") from None
    except OSError as e:
        raise MaskFileError(p, f"cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise MaskFileError(p, f"not valid TOML ({e})") from None
    if "train" in data:
        extra = sorted(k for k in data if k != "train")
        if extra:
            raise MaskFileError(p, f"keys outside the [train] table: {', '.join(extra)}")
        data = data["train"]
        if not isinstance(data, dict):
            raise MaskFileError(p, "'train' is not a table")
    cfg = from_dict(data, where=str(p))
    return cfg.replace(**overrides) if overrides else cfg


def coerce(key: str, value: Any, where: str | None) -> Any:
    """Check one value's type against the field (ints are accepted for floats)."""
    prefix = f"{where}: " if where else ""
    t = str(_TYPES[key])
    if value is None:
        if "None" in t:
            return None
        raise MaskValidationError(f"{prefix}{key} cannot be null")
    if key == "lr_milestones":
        if not isinstance(value, list | tuple) or not all(_is_number(v) for v in value):
            raise MaskValidationError(f"{prefix}lr_milestones must be a list of numbers")
        return tuple(float(v) for v in value)
    if t.startswith("bool"):
        ok = isinstance(value, bool)
    elif t.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t.startswith("float"):
        ok = _is_number(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = t.split(" |")[0]
        raise MaskValidationError(f"{prefix}{key} must be {kind}, got {value!r}")
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _choice(key: str, value: str, known) -> None:
    if value not in known:
        raise UnknownNameError(key, value, known)


def _range(key: str, value: float, lo: float, hi: float, *, lo_open: bool, hi_open: bool) -> None:
    bad = not math.isfinite(value)
    bad = (
        bad or (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi)
    )
    if bad:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise MaskValidationError(f"{key} must be in {lb}{lo}, {hi}{rb}, got {value!r}")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the method's defaults and check every value; returns a config with ``resolved``.

    Raises
    ------
    UnknownNameError
        Unknown method, model, dataset, optimizer, schedule, growth, ... (lists the known ones).
    MaskValidationError
        A value out of range, or a method-specific field set for a method that does not use it.
    """
    from ..zoo import DATASETS, MODELS

    if cfg.resolved:
        return cfg
    for key in FIELDS:
        coerce(key, getattr(cfg, key), None)
    _choice("method", cfg.method, METHODS)
    _choice("model", cfg.model, MODELS)
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("lr schedule", cfg.lr_schedule, LR_SCHEDULES)
    _choice("augmentation", cfg.augment, AUGMENTS)
    _choice("device", cfg.device, DEVICES)
    _choice("dump_weights", cfg.dump_weights, DUMP_WEIGHTS)

    defaults = METHOD_DEFAULTS[cfg.method]
    changes: dict[str, Any] = {}
    for key in METHOD_FIELDS:
        value = getattr(cfg, key)
        if key not in defaults:
            if value is not None:
                users = [m for m, d in METHOD_DEFAULTS.items() if key in d]
                raise MaskValidationError(
                    f"{key} is not used by method {cfg.method!r} (it applies to: "
                    f"{', '.join(users)})"
                )
        elif value is None:
            changes[key] = defaults[key]
    if cfg.init_masks is not None and cfg.method != "static":
        raise MaskValidationError(f"init_masks is only used by method 'static', not {cfg.method!r}")
    if cfg.method == "static" and cfg.init_masks is not None and cfg.init_method is not None:
        raise MaskValidationError("static: give init_method or init_masks, not both")
    if cfg.method == "static" and cfg.init_masks is not None:
        changes["init_method"] = None
    out = dataclasses.replace(cfg, **changes)

    _range("density", out.density, 0.0, 1.0, lo_open=True, hi_open=False)
    if out.method == "dense" and out.density != 1.0:
        raise MaskValidationError(f"method 'dense' trains every weight: density must be 1, got "
                                  f"{out.density!r}")  # fmt: skip
    for key in ("epochs", "batch_size", "eval_every"):
        if getattr(out, key) < 1:
            raise MaskValidationError(f"{key} must be >= 1, got {getattr(out, key)!r}")
    if out.max_steps is not None and out.max_steps < 1:
        raise MaskValidationError(f"max_steps must be >= 1, got {out.max_steps!r}")
    if out.seed < 0:
        raise MaskValidationError(f"seed must be an integer >= 0, got {out.seed!r}")
    if out.checkpoint_every < 0:
        raise MaskValidationError(f"checkpoint_every must be >= 0, got {out.checkpoint_every!r}")
    if out.num_workers < 0:
        raise MaskValidationError(f"num_workers must be >= 0, got {out.num_workers!r}")
    _range("lr", out.lr, 0.0, math.inf, lo_open=True, hi_open=True)
    _range("momentum", out.momentum, 0.0, 1.0, lo_open=False, hi_open=True)
    _range("weight_decay", out.weight_decay, 0.0, math.inf, lo_open=False, hi_open=True)
    _range("lr_gamma", out.lr_gamma, 0.0, 1.0, lo_open=True, hi_open=False)
    _range("warmup_epochs", out.warmup_epochs, 0.0, float(out.epochs), lo_open=False,
           hi_open=False)  # fmt: skip
    _range("label_smoothing", out.label_smoothing, 0.0, 1.0, lo_open=False, hi_open=True)
    _range("val_fraction", out.val_fraction, 0.0, 1.0, lo_open=False, hi_open=True)
    for m in out.lr_milestones:
        _range("each lr milestone", m, 0.0, 1.0, lo_open=True, hi_open=True)
    if list(out.lr_milestones) != sorted(out.lr_milestones):
        raise MaskValidationError(f"lr_milestones must be increasing, got {out.lr_milestones}")
    if out.nesterov and out.optimizer == "sgd" and out.momentum == 0:
        raise MaskValidationError("nesterov needs momentum > 0")

    if out.distribution is not None:
        _choice("distribution", out.distribution, DISTRIBUTIONS)
    if out.growth is not None:
        _choice("growth", out.growth, GROWTHS)
    if out.drop is not None:
        _choice("drop", out.drop, DROPS)
    if out.prune_scope is not None:
        _choice("prune scope", out.prune_scope, SCOPES)
    if out.init_method is not None:
        from .. import pai

        _choice("PaI method", out.init_method, tuple(pai.METHODS))
    if out.update_interval is not None and out.update_interval < 1:
        raise MaskValidationError(f"update_interval must be >= 1, got {out.update_interval!r}")
    if out.rate is not None:
        _range("rate", out.rate, 0.0, 1.0, lo_open=False, hi_open=False)
    if out.rate_min is not None:
        _range("rate_min", out.rate_min, 0.0, out.rate, lo_open=False, hi_open=False)
    if out.update_end is not None:
        _range("update_end", out.update_end, 0.0, 1.0, lo_open=True, hi_open=False)
    if out.init_density is not None:
        _range("init_density", out.init_density, 0.0, 1.0, lo_open=True, hi_open=False)
        if out.init_density < out.density:
            raise MaskValidationError(f"init_density ({out.init_density}) must be >= density "
                                      f"({out.density})")  # fmt: skip
    if out.prune_start is not None:
        _range("prune_start", out.prune_start, 0.0, 1.0, lo_open=False, hi_open=True)
        _range("prune_end", out.prune_end, out.prune_start, 1.0, lo_open=True, hi_open=False)
    return dataclasses.replace(out, resolved=True)
