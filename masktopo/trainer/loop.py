"""The training loop: masked SGD/AdamW training that records every mask change.

One call, :func:`train`, runs a whole (or resumed) run:

1. resolve and check the config; check the output directory (fresh, or resumable);
2. load the data (in memory; on the GPU when training there), carve the validation split from the
   training set with its own generator (the test set is evaluated only at the end, never used to
   select anything);
3. build the model from its own generator, the method's sparsifier and its start masks;
4. per step: forward (bfloat16 autocast on CUDA when ``amp``), loss, backward, optimizer step
   (skipped on RigL's update steps), post-step masking of weights and optimizer state, then the
   method's update, which may change the masks (each change is one recorded event);
5. per epoch: validation (every ``eval_every`` epochs) and a checkpoint written atomically.

Determinism: every random draw comes from a generator seeded from ``(seed, purpose[, epoch])``:
model init, masks, data order and augmentation (per epoch), PaI scoring batches. A checkpoint holds
the model (with its mask buffers), optimizer, sparsifier state and the step counter; the LR is a pure
function of the step. So a run resumed from the checkpoint of epoch ``e`` replays exactly what an
uninterrupted run does after epoch ``e`` (on the CPU; CUDA kernels may be nondeterministic).

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel`` (gloo on the CPU, NCCL on CUDA). All ranks draw the same global batch
order; rank ``r`` takes samples ``r, r + W, ...`` of each global batch, so the averaged gradient is
the global batch's. Mask updates use only replicated state (weights, averaged gradients, seeded
generators), so masks stay identical; this is checked after every mask event by comparing a
checksum across ranks. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .._version import git_commit, versions
from ..checks import is_int
from ..distributed import World, init_world, process_device
from ..errors import MaskFileError, MaskTopoError, MaskValidationError
from ..runs import (
    RunLock,
    RunWriter,
    check_out_dir,
    check_same_config,
    read_checkpoint,
    read_run_json,
    write_checkpoint,
)
from ..runs.layout import CHECKPOINT_FILE, RUN_FILE
from ..seeding import generator, seed_for
from .config import FIELDS, RESUMABLE_CHANGES, TrainConfig, from_dict, resolve
from .logs import RunLog, check_packages
from .session import DivergedError, SparseSession, masks_agree
from .start import initial_state_file, load_initial_state

CHECKPOINT_FORMAT = "masktopo.checkpoint"
#: Version 2 added mid-epoch checkpoints (the epoch's running sums) and the events digest.
CHECKPOINT_VERSION = 2
CHECKPOINT_VERSIONS = (1, 2)

#: Environment variable for tests: ``os._exit(137)`` right after this global step (a hard kill).
CRASH_ENV = "MASKTOPO_TEST_CRASH_AFTER_STEP"
#: Environment variable for tests: ``"event:K:FILE"`` or ``"checkpoint:K:FILE"``: once event K
#: (its number) or the K-th checkpoint of this process is on disk, create FILE and wait to be
#: killed (a test sends SIGKILL at a known point of the run).
HOLD_ENV = "MASKTOPO_TEST_HOLD"


class TrainingError(MaskTopoError):
    """Training cannot go on (a NaN loss, ranks that disagree); the run directory is intact."""


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0 has the full picture; other ranks the same numbers).

    Attributes
    ----------
    out : pathlib.Path or None
        The run directory.
    config : TrainConfig
        The resolved configuration.
    steps, epochs : int, float
        Steps done (in total, resumed part included) and epochs (fractional when stopped by
        ``max_steps``).
    n_events : int
        Mask events recorded.
    density : float
        Final density of the maskable weights.
    history : list of dict
        One dict per epoch: ``epoch``, ``step``, ``train_loss``, ``train_acc``, ``val_loss``,
        ``val_acc`` (NaN when not evaluated), ``lr``, ``density``, ``seconds``, method scalars.
    final : dict
        ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``
        (NaN when a split is not available), method scalars such as ``R_s``.
    seconds : float
        Wall time of this call.
    """

    out: Path | None
    config: TrainConfig
    steps: int
    epochs: float
    n_events: int
    density: float
    history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# small pure pieces
# ---------------------------------------------------------------------------------------------
def lr_at(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    r"""The learning rate of global step ``step`` (0-based): a pure function of the step.

    Warm-up (``warmup_epochs`` :math:`\times` steps per epoch = :math:`W` steps) rises linearly
    from ``lr / 10`` to ``lr``; then ``step``: :math:`\eta\,\gamma^{\#\{m : t \ge m T\}}` for the
    milestone fractions :math:`m`; ``cosine``: :math:`\eta (1 + \cos(\pi (t - W)/(T - W)))/2`;
    ``constant``: :math:`\eta`.
    """
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (0.1 + 0.9 * step / warm)
    if cfg.lr_schedule == "step":
        k = sum(step >= m * total_steps for m in cfg.lr_milestones)
        return cfg.lr * cfg.lr_gamma**k
    if cfg.lr_schedule == "cosine":
        span = max(total_steps - warm, 1)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))
    return cfg.lr


def crop_flip(raw: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel zero-padded crop and horizontal flip of a raw image batch [N,C,H,W].

    The CIFAR recipe (torchvision ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``),
    batched: one gather with per-sample offsets drawn from ``gen`` (on the batch's device).
    """
    n, c, h, w = raw.shape
    dev = raw.device
    padded = F.pad(raw, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev)
    flip = torch.rand(n, generator=gen, device=dev) < 0.5
    cols = torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], w - 1 - cols[None, :], cols[None, :]) + ox[:, None]
    rows = torch.arange(h, device=dev)[None, :] + oy[:, None]
    idx_n = torch.arange(n, device=dev)[:, None, None, None]
    idx_c = torch.arange(c, device=dev)[None, :, None, None]
    return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def _use_augment(cfg: TrainConfig, in_shape: tuple[int, ...]) -> bool:
    if cfg.augment == "crop-flip":
        if len(in_shape) != 3:
            raise MaskValidationError(f"augment crop-flip needs image data, {cfg.dataset!r} has "
                                      f"samples of shape {in_shape}")  # fmt: skip
        return True
    if cfg.augment == "none":
        return False
    return len(in_shape) == 3 and in_shape[0] == 3 and min(in_shape[1:]) >= 32


# ---------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------
def _reduce_sum(dist_info: World, values: torch.Tensor) -> torch.Tensor:
    if dist_info.size == 1:
        return values
    import torch.distributed as dist

    dist.all_reduce(values)
    return values


# ---------------------------------------------------------------------------------------------
# run directory
# ---------------------------------------------------------------------------------------------
def resume_config(out: Path, **overrides) -> TrainConfig:
    """The config a run directory was started with, with the allowed ``overrides``.

    Raises
    ------
    MaskFileError
        When run.json is unreadable or an override would change the result (only
        :data:`~masktopo.trainer.config.RESUMABLE_CHANGES` may differ).
    """
    out = Path(out)
    check_out_dir(out, "train", resume=True)
    run = read_run_json(out)
    saved = run.get("config", {})
    try:
        cfg = from_dict({k: v for k, v in saved.items() if k in FIELDS}, where=str(out / RUN_FILE))
    except MaskTopoError as e:
        raise MaskFileError(out / RUN_FILE, f"invalid training config ({e})") from None
    if not overrides:
        return cfg
    new = cfg.replace(**overrides)
    check_same_config(cfg.to_dict(), new.to_dict(), allowed=RESUMABLE_CHANGES,
                      where=f"{out}: --resume")  # fmt: skip
    return new


def _load_checkpoint(out: Path) -> dict | None:
    """The run's checkpoint, checked; None when the run stopped before its first one."""
    ckpt = read_checkpoint(out)
    if ckpt is None:
        return None
    path = out / CHECKPOINT_FILE
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise MaskFileError(path, "is not a masktopo training checkpoint")
    if ckpt.get("version") not in CHECKPOINT_VERSIONS:
        raise MaskFileError(path, f"checkpoint version {ckpt.get('version')!r} is not supported")
    for key in ("model", "optimizer", "sparsifier", "step", "epoch", "n_events", "config"):
        if key not in ckpt:
            raise MaskFileError(path, f"incomplete checkpoint (no {key!r})")
    _check_checkpoint(ckpt, path)
    return ckpt


def _bad(path: Path, key: str, problem: str) -> MaskFileError:
    """The error of a checkpoint field ``key`` that cannot be resumed from."""
    return MaskFileError(path, f"invalid checkpoint: {key!r} {problem}")


def _check_checkpoint(ckpt: dict, path: Path) -> None:
    """Check the types of the fields :func:`_train` reads from a checkpoint, and that its model
    and optimizer hold finite numbers; :func:`_check_position` checks the step once the steps
    per epoch are known. Both run before anything in the run directory is rewritten.

    Raises
    ------
    MaskFileError
        Naming ``path`` and the first bad field.
    """
    for key in ("step", "epoch", "n_events"):
        v = ckpt[key]
        if not is_int(v) or v < 0:
            raise _bad(path, key, f"must be a non-negative integer, not {_shown(v)}")
    for key in ("model", "optimizer", "sparsifier", "config"):
        if not isinstance(ckpt[key], dict):
            raise _bad(path, key, f"must be a dict, not {type(ckpt[key]).__name__}")
    digest = ckpt.get("events_digest")
    if digest is not None and not isinstance(digest, str):
        raise _bad(path, "events_digest", f"must be a string, not {type(digest).__name__}")
    for name, t in ckpt["model"].items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise _bad(path, "model", f"must map names to tensors ({_shown(name)}: "
                       f"{type(t).__name__})")  # fmt: skip
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _bad(path, "model", f"holds NaN or infinite values in {name!r}")
    opt = ckpt["optimizer"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise _bad(path, "optimizer", "must hold a 'state' dict and a 'param_groups' list")
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list)
               for g in opt["param_groups"]):  # fmt: skip
        raise _bad(path, "optimizer", "has a param group that is not a dict with a 'params' list")
    for i, state in opt["state"].items():
        if not isinstance(state, dict):
            raise _bad(path, "optimizer", f"has a state of parameter {i!r} that is not a dict")
        for k, t in state.items():
            if (isinstance(t, torch.Tensor) and t.is_floating_point()
                    and not bool(torch.isfinite(t).all())):  # fmt: skip
                raise _bad(path, "optimizer", f"holds NaN or infinite values in the {k!r} of "
                           f"parameter {i!r}")  # fmt: skip
    history = ckpt.get("history", [])
    keys = ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc")
    if not isinstance(history, list) or not all(
        isinstance(h, dict) and all(k in h for k in keys) for h in history
    ):
        raise _bad(path, "history", f"must be a list of dicts with the keys {', '.join(keys)}")
    if "sums" in ckpt:
        sums = ckpt["sums"]
        if not (isinstance(sums, torch.Tensor) and sums.shape == (3,)
                and sums.is_floating_point()):  # fmt: skip
            raise _bad(path, "sums", "must be a tensor of 3 floats (the epoch's running sums)")
    rng = ckpt.get("rng")
    if not isinstance(rng, dict) or not all(
        isinstance(rng.get(k), torch.Tensor) and rng[k].dtype == torch.uint8
        for k in ("torch", *(("cuda",) if "cuda" in rng else ()))
    ):
        raise _bad(path, "rng", "must be a dict of random generator states (uint8 tensors)")


def _check_position(ckpt: dict, path: Path, steps_per_epoch: int, total_steps: int) -> None:
    """Check the checkpoint's ``step`` and ``epoch`` against this run's length.

    Raises
    ------
    MaskFileError
        A step beyond ``total_steps``, or an epoch that is not the step's.
    """
    step, epoch = ckpt["step"], ckpt["epoch"]
    if step > total_steps:
        raise _bad(path, "step", f"is {step}, beyond this run's {total_steps} steps")
    if epoch != step // steps_per_epoch:
        raise _bad(path, "epoch", f"is {epoch}, but step {step} is in epoch "
                   f"{step // steps_per_epoch} ({steps_per_epoch} steps per epoch)")  # fmt: skip


def _shown(value) -> str:
    """``value``'s repr, cut to 40 characters, for a one-line message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _hold(what: str, count: int, writer: RunWriter) -> None:
    """The test hook of :data:`HOLD_ENV`: at the named point, flush, signal and wait."""
    spec = os.environ.get(HOLD_ENV, "")
    if not spec:
        return
    kind, _, rest = spec.partition(":")
    n, _, marker = rest.partition(":")
    if kind == what and n.isdigit() and int(n) == count:
        writer.flush()
        Path(marker).write_text(str(os.getpid()))
        while True:
            time.sleep(60)


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def training_split(cfg: TrainConfig):
    """``(train, val)``: the dataset's training file split as every run of ``cfg`` splits it
    (the last ``val_fraction`` of a seeded permutation held out; ``val`` None without one).
    What the model trains on, and what methods that draw training samples draw from."""
    from ..zoo import load_dataset, split_train_val

    train = load_dataset(cfg.dataset, data_dir=cfg.data_dir, split="train")
    if cfg.val_fraction > 0:
        return split_train_val(train, cfg.val_fraction, generator(cfg.seed, "val-split"))
    return train, None


@functools.lru_cache(maxsize=8)
def _train_split_size(dataset: str, data_dir: str | None, val_fraction: float) -> int | None:
    """Samples in the training split of ``dataset`` (after the validation split, as
    :class:`_Data` carves it); None when the files cannot be read here."""
    from ..zoo import load_dataset, split_train_val

    try:
        n = len(load_dataset(dataset, data_dir=data_dir, split="train"))
    except MaskTopoError:
        return None
    if val_fraction > 0:
        return len(split_train_val(range(n), val_fraction, torch.Generator())[0])
    return n


def check_schedule(cfg: TrainConfig) -> None:
    """Raise the error ``masktopo train`` would raise when it starts ``cfg`` (a resolved config)
    for its step counts: the method's schedule is built for the steps per epoch of the
    dataset's training split (no model is built). How ``masktopo sweep`` checks each cell before
    any runs. Nothing is checked when the dataset's files cannot be read here (a sweep that is
    submitted where the data is not).

    Raises
    ------
    MaskValidationError
        A batch larger than the training split; a schedule with no update or pruning event
        (``set``/``rigl``/``itop``/``granet``/``gmp``), a GaP layout longer than the run; more
        samples per CHITA event than the split holds (the methods' ``check_data``).
    """
    n = _train_split_size(cfg.dataset, cfg.data_dir, float(cfg.val_fraction))
    if n is None:
        return
    spe = n // cfg.batch_size
    if spe < 1:
        raise MaskValidationError(f"batch_size {cfg.batch_size} is larger than the training "
                                  f"split ({n} samples)")  # fmt: skip
    from .methods import METHODS

    METHODS[cfg.method].check_data(cfg, n)
    METHODS[cfg.method](cfg, steps_per_epoch=spe, total_steps=spe * cfg.epochs, device="cpu")


class _Data:
    """In-memory splits and the per-epoch batch order."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dist_info: World):
        from ..zoo import get_spec, load_dataset

        self.spec = get_spec(cfg.dataset)
        train, val = training_split(cfg)
        try:
            test = load_dataset(cfg.dataset, data_dir=cfg.data_dir, split="test")
        except MaskFileError:
            test = None
        self.train = train.to(device)
        self.val = val.to(device) if val is not None else None
        self.test = test.to(device) if test is not None else None
        self.device = device
        self.dist = dist_info
        self.batch_size = cfg.batch_size
        if cfg.batch_size % dist_info.size:
            raise MaskValidationError(f"batch_size {cfg.batch_size} is not divisible by the "
                                      f"{dist_info.size} processes")  # fmt: skip
        self.steps_per_epoch = len(self.train) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise MaskValidationError(f"batch_size {cfg.batch_size} is larger than the training "
                                      f"split ({len(self.train)} samples)")  # fmt: skip
        self.augment = _use_augment(cfg, tuple(self.spec.in_shape))
        self.seed = cfg.seed

    def epoch_batches(self, epoch: int, start: int = 0):
        """Yield ``(x, y)`` for the batches of ``epoch`` from batch ``start`` (this rank's part)."""
        g = generator(self.seed, "data-order", epoch)
        perm = torch.randperm(len(self.train), generator=g).to(self.device)
        aug = generator(self.seed, "augment", epoch, self.dist.rank, device=self.device)
        b = self.batch_size
        for i in range(self.steps_per_epoch):
            idx = perm[i * b : (i + 1) * b][self.dist.rank :: self.dist.size]
            if i < start:
                if self.augment:  # keep the augmentation stream aligned with an unbroken epoch
                    crop_flip(self.train.data[idx[:1]].expand(len(idx), -1, -1, -1), aug)
                continue
            raw, y = self.train.data[idx], self.train.targets[idx]
            if self.augment:
                raw = crop_flip(raw, aug)
            yield self.train.normalize(raw), y

    def pai_batches(self, n: int | None = None):
        """Training batches of ``batch_size`` for data-driven PaI scoring, in an order of their
        own (the ``pai-batches`` stream): ``n`` of them, or (None) all of the training split,
        the last one smaller. Made as they are read (a method that reads them twice keeps
        them)."""
        g = generator(self.seed, "pai-batches")
        perm = torch.randperm(len(self.train), generator=g).to(self.device)
        b = self.batch_size
        count = -(-len(self.train) // b)
        count = count if n is None else min(n, count)
        return (self.train.batch(perm[i * b : (i + 1) * b]) for i in range(count))


def _loss(spec, logits, y, smoothing: float):
    if spec.loss == "cross_entropy":
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
    return spec.loss_fn(logits.float(), y)


@torch.no_grad()
def evaluate(model, dataset, spec, *, dist_info: World | None = None, amp: bool = False,
             batch: int = 1024) -> tuple[float, float]:  # fmt: skip
    """Mean loss and accuracy of ``model`` on ``dataset`` (this rank's share, summed over ranks)."""
    dist_info = World() if dist_info is None else dist_info
    was = model.training
    model.eval()
    n = len(dataset)
    idx = torch.arange(dist_info.rank, n, dist_info.size, device=dataset.data.device)
    sums = torch.zeros(3, dtype=torch.float64, device=dataset.data.device)
    for i in range(0, len(idx), batch):
        x, y = dataset.batch(idx[i : i + batch])
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = _loss(spec, logits, y, 0.0)
        sums[0] += loss.double() * len(y)
        sums[1] += (spec.predict(logits) == y).sum()
        sums[2] += len(y)
    model.train(was)
    sums = _reduce_sum(dist_info, sums)
    total = float(sums[2])
    return float(sums[0]) / total, float(sums[1]) / total


def _evaluate_at(model, data, dist_info: World, amp: bool, owner: int | None):
    """Validation loss and accuracy; ``owner``: only that rank's model is the run's model now
    (P-GaP's replicas), so it evaluates the whole split and broadcasts the two numbers."""
    if owner is None or dist_info.size == 1:
        return evaluate(model, data.val, data.spec, dist_info=dist_info, amp=amp)
    import torch.distributed as dist

    out = torch.zeros(2, dtype=torch.float64, device=data.val.data.device)
    if dist_info.rank == owner:
        out[0], out[1] = evaluate(model, data.val, data.spec, amp=amp)
    dist.broadcast(out, src=owner)
    return float(out[0]), float(out[1])


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    cfg: TrainConfig,
    out: str | os.PathLike | None,
    *,
    resume: bool = False,
    progress: bool = False,
    callback=None,
) -> TrainResult:
    """Train one run and record its mask events into the run directory ``out``.

    Parameters
    ----------
    cfg : TrainConfig
        The configuration (resolved here). With ``resume``, pass
        :func:`resume_config` ``(out, ...)``.
    out : path or None
        The run directory: new or empty for a fresh run, an existing run with ``resume``; None
        records nothing (for benchmarks).
    resume : bool
        Continue the run in ``out`` from its last checkpoint (from step 0 with the run's config
        when it stopped before its first checkpoint). The events written after the checkpoint
        are dropped and recorded again; the events up to it must be the ones it saw.
    progress : bool
        Show a progress bar on stderr (rank 0). Either way rank 0 writes one line per epoch to
        stderr (:mod:`masktopo.trainer.logs`) and, with ``out``, to ``metrics.jsonl``.
    callback : callable, optional
        ``callback(step, info)`` after each step, ``info`` = ``{"loss", "epoch", "model"}`` (tests
        and benchmarks).

    Returns
    -------
    TrainResult

    Raises
    ------
    MaskTopoError
        Bad config or names (before anything is written), a missing dataset, an unusable output
        directory, a corrupt checkpoint, a failed write (e.g. a full disk), a NaN loss
        (:class:`TrainingError`), another process writing the same run, ``tensorboard`` or
        ``wandb`` without its package (before anything is written). The run directory keeps
        its last complete event and checkpoint.
    """
    cfg = resolve(cfg)
    check_packages(cfg)  # --tensorboard, --wandb: before anything is written
    out_path = Path(out) if out is not None else None
    rank0 = int(os.environ.get("RANK", "0")) == 0
    # Under torchrun only rank 0 checks a fresh --out: it creates the directory, and another rank
    # checking later would find it taken (a failing rank 0 makes torchrun stop the others).
    if out_path is not None and (resume or rank0):
        check_out_dir(out_path, "train", resume=resume)
    lock = RunLock(out_path) if out_path is not None and rank0 else None
    if lock is not None and resume:
        lock.acquire()  # before reading the checkpoint: no other process writes it meanwhile
    try:
        return _train(cfg, out_path, lock, resume=resume, progress=progress, callback=callback)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, out_path: Path | None, lock: RunLock | None, *, resume: bool,
           progress: bool, callback) -> TrainResult:  # fmt: skip
    t_start = time.perf_counter()
    ckpt = _load_checkpoint(out_path) if resume else None
    if ckpt is not None:
        saved = {k: v for k, v in ckpt["config"].items() if k in FIELDS}
        ours = cfg.to_dict()
        check_same_config({**ours, **saved}, ours, allowed=RESUMABLE_CHANGES,
                          where=out_path / CHECKPOINT_FILE)  # fmt: skip
    elif resume and lock is not None:  # the writing rank says it once
        warnings.warn(f"{out_path}: the run stopped before its first checkpoint; starting it "
                      "again from step 0 with its recorded config", stacklevel=3)  # fmt: skip

    device = process_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist_info = init_world(device.type)
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    from .methods import METHODS

    # P-GaP: each process trains its own replica on whole batches (no DDP, no batch split)
    independent = METHODS[cfg.method].independent_ranks(cfg)
    data = _Data(cfg, device, World() if independent else dist_info)
    METHODS[cfg.method].check_data(cfg, len(data.train))
    spe = data.steps_per_epoch
    total_steps = spe * cfg.epochs
    stop_step = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
    if ckpt is not None:
        _check_position(ckpt, out_path / CHECKPOINT_FILE, spe, total_steps)

    from ..pai.densities import keeps_some
    from ..zoo import get_model, maskable_parameters

    model = get_model(cfg.model, dataset=data.spec, generator=generator(cfg.seed, "model"),
                      **({} if cfg.width is None else {"width": cfg.width}))  # fmt: skip
    start_state = initial_state_file(cfg) if ckpt is None else None
    if start_state is not None:
        load_initial_state(model, start_state)
    model.to(device)
    image = len(data.spec.in_shape) == 3
    channels_last = cfg.channels_last if cfg.channels_last is not None else (
        device.type == "cuda" and image)  # fmt: skip
    if channels_last:
        model.to(memory_format=torch.channels_last)
    maskable = maskable_parameters(model, first_dense=cfg.first_dense, last_dense=cfg.last_dense)
    if not maskable:
        raise MaskValidationError(f"model {cfg.model!r} has no maskable layer left")
    keeps_some(cfg.density, sum(p.numel() for p in maskable.values()), "maskable weights")
    session = SparseSession(cfg, model, maskable, steps_per_epoch=spe, total_steps=total_steps,
                            device=device)  # fmt: skip
    sparsifier = session.sparsifier

    if ckpt is None:
        session.start(generator(cfg.seed, "masks", device=device),
                      batches=data.pai_batches(cfg.score_batches) if cfg.method == "static"
                      else None)  # fmt: skip
    elif any(k.endswith("_mask") for k in ckpt["model"]):  # the masks come with the model
        session.attach({n: torch.ones_like(p, dtype=torch.bool) for n, p in maskable.items()})
    masking = session.masking

    opt_params = model.parameters()
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(opt_params, lr=cfg.lr, momentum=cfg.momentum,
                                    nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)  # fmt: skip
    else:
        optimizer = torch.optim.AdamW(opt_params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    step, epoch0, history = 0, 0, []
    n_events = 0
    epoch_sums = None  # the running sums of the epoch a mid-epoch checkpoint was taken in
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            sparsifier.load_state_dict(ckpt["sparsifier"])
            _set_rng_state(ckpt["rng"], device)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
            msg = " ".join(str(e).split())[:200]
            raise MaskFileError(out_path / CHECKPOINT_FILE, f"does not fit this run ({msg})")\
                from None  # fmt: skip
        if masking is not None:
            masking.apply(optimizer)
        step, epoch0, n_events = ckpt["step"], ckpt["epoch"], ckpt["n_events"]
        history = list(ckpt.get("history", []))
        if "sums" in ckpt and dist_info.main:  # summed over the ranks: rank 0 carries them
            epoch_sums = torch.as_tensor(ckpt["sums"], dtype=torch.float64)
    else:
        torch.manual_seed(seed_for(cfg.seed, "torch-global"))

    layer_names = list(maskable)
    writer = out_path is not None and dist_info.main
    if writer and not resume:
        out_path.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        check_out_dir(out_path, "train", resume=False)  # nobody started a run here meanwhile
    recorder = RunWriter(out_path if writer else None, n_events=n_events)
    session.writer = recorder
    session.steps_done = step
    n_checkpoints = 0

    def latest() -> dict:  # the metrics of the last completed epoch, and when they were measured
        if not history:
            return {}
        h = history[-1]
        return {**{k: h[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
                "metrics_epoch": h["epoch"]}  # fmt: skip

    def check_ranks(kind: str, m: dict) -> None:
        if dist_info.size > 1 and not masks_agree(m):
            raise TrainingError(f"the masks differ across ranks after the {kind} event at step "
                                f"{session.steps_done}; this is a bug, please report it")  # fmt: skip

    session.extra_scalars = latest  # session.on_event: below, with the live logs
    session.after_event = lambda k: _hold("event", k, recorder)
    record = session.record

    if writer:
        if ckpt is None:
            from ..analysis.paths import layer_graph

            try:
                graph = layer_graph(model, tuple(data.spec.in_shape), layers=layer_names)
            except MaskTopoError as e:  # an architecture the tracer does not know
                warnings.warn(f"no layer graph in run.json: {e}", stacklevel=2)
                graph = None
            if resume:  # stopped before its first checkpoint: start again, events and all
                recorder.truncate(0)
            recorder.write_run_json("train", {
                "git": git_commit(),
                "config": cfg.to_dict(),
                "seed": cfg.seed,
                "seeds": {p: seed_for(cfg.seed, p) for p in
                          ("model", "masks", "val-split", "data-order", "pai-batches")},
                "world_size": dist_info.size,
                "steps_per_epoch": spe,
                "total_steps": total_steps,
                "data": {"train": len(data.train), "val": len(data.val) if data.val else 0,
                         "test": len(data.test) if data.test else 0,
                         "augment": data.augment},
                "versions": versions(),
                "layers": [{"name": n, "kind": "conv" if p.dim() > 2 else "linear",
                            "shape": list(p.shape)} for n, p in maskable.items()],
                "graph": graph,
                "method_info": sparsifier.describe(),
            })  # fmt: skip
        else:
            recorder.truncate(n_events, ckpt.get("events_digest"))
    # the live logs (metrics.jsonl cut back to the checkpoint on resume, TensorBoard, W&B)
    runlog = RunLog(cfg, out_path if writer else None, main=dist_info.main,
                    resumed_at=step if resume else None)  # fmt: skip

    def on_event(kind: str, m: dict) -> None:
        check_ranks(kind, m)
        runlog.event(kind, m, session.steps_done, sparsifier.scalars())

    session.on_event = on_event
    if ckpt is None:
        record("init", **sparsifier.init_event())

    if device.type == "cpu" and dist_info.size == 1:
        train_model = model
    elif dist_info.size > 1 and not independent:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        train_model = model
    model.train()

    bar = None
    if progress and dist_info.main:
        from tqdm import tqdm

        bar = tqdm(total=stop_step, initial=step, unit="step", dynamic_ncols=True,
                   file=sys.stderr, desc=f"{cfg.method} {cfg.model}")  # fmt: skip

    def checkpoint(mid_epoch: bool = False) -> None:
        nonlocal n_checkpoints
        recorder.flush()
        # A mid-epoch checkpoint carries the epoch's running sums (over the ranks), so that the
        # epoch's loss and accuracy come out as in an unbroken run.
        partial = _reduce_sum(dist_info, sums.clone()).cpu() if mid_epoch else None
        if writer:
            obj = {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": cfg.to_dict(), "step": step, "epoch": step // spe,
                "n_events": recorder.n_events, "events_digest": recorder.digest(),
                "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "sparsifier": sparsifier.state_dict(), "rng": _rng_state(device),
            }  # fmt: skip
            if partial is not None:
                obj["sums"] = partial
            write_checkpoint(out_path, obj)
        n_checkpoints += 1
        _hold("checkpoint", n_checkpoints, recorder)

    crash_after = int(os.environ.get(CRASH_ENV, "-1"))
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    epoch = epoch0
    stopped = False
    try:
        for epoch in range(epoch0, cfg.epochs):
            t_epoch = time.perf_counter()
            sums.zero_()
            start_in_epoch = step - epoch * spe
            if start_in_epoch and epoch_sums is not None:  # resumed from a mid-epoch checkpoint
                sums.copy_(epoch_sums)
            epoch_sums = None
            for x, y in data.epoch_batches(epoch, start_in_epoch):
                if step >= stop_step:
                    stopped = True
                    break
                if not sparsifier.computes(step):  # another process's replica (P-GaP)
                    session.after_step(step, optimizer)
                    step += 1
                    continue
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                lr = lr_at(cfg, *sparsifier.lr_position(step), spe)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = train_model(x)
                loss = _loss(data.spec, logits, y, cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if not session.skip_step(step):
                    optimizer.step()
                try:
                    session.after_step(step, optimizer)
                except DivergedError as e:
                    raise TrainingError(f"{e}; the last checkpoint and events are intact; lower "
                                        "--lr or check the data") from None  # fmt: skip
                if sparsifier.counts_step(step):  # P-GaP's fine-tuning: rank 0 counts it once
                    with torch.no_grad():
                        sums[0] += loss.detach().double() * len(y)
                        sums[1] += (data.spec.predict(logits.detach()) == y).sum()
                        sums[2] += len(y)
                step += 1
                if (step % 50 == 0 or step == stop_step) and float(sums[2]) > 0:
                    mean_loss = float(sums[0] / sums[2])
                    if not math.isfinite(mean_loss):
                        raise TrainingError(
                            f"the training loss is {mean_loss} at step {step} (epoch "
                            f"{epoch + 1}); the last checkpoint and events are intact; lower "
                            "--lr or check the data"
                        )
                    if bar is not None:
                        bar.update(step - bar.n)
                        post = {"loss": f"{mean_loss:.4f}",
                                "acc": f"{float(sums[1] / sums[2]):.3f}",
                                "density": f"{session.density():.4f}"}  # fmt: skip
                        post.update({k: f"{v:.4f}" for k, v in sparsifier.scalars().items()
                                     if isinstance(v, float)})  # fmt: skip
                        bar.set_postfix(post, refresh=False)
                if callback is not None:
                    callback(step, {"loss": loss, "epoch": epoch, "model": model})
                if step == crash_after:
                    recorder.flush()
                    os._exit(137)
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                        and step % spe and step < stop_step
                        and sparsifier.can_checkpoint(step - 1)):  # fmt: skip
                    checkpoint(mid_epoch=True)
            if stopped and step - epoch * spe < spe:
                break
            # ---- end of a complete epoch: evaluate, checkpoint
            tr = _reduce_sum(dist_info, sums.clone())
            train_loss, train_acc = float(tr[0] / tr[2]), float(tr[1] / tr[2])
            if not math.isfinite(train_loss):
                raise TrainingError(f"the training loss is {train_loss} in epoch {epoch + 1}; "
                                    "the last checkpoint is intact")  # fmt: skip
            val_loss = val_acc = float("nan")
            last = epoch + 1 == cfg.epochs or step >= stop_step
            if data.val is not None and ((epoch + 1) % cfg.eval_every == 0 or last):
                val_loss, val_acc = _evaluate_at(model, data, dist_info, amp,
                                                 sparsifier.eval_rank(step - 1))  # fmt: skip
            row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
                   "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
                   "lr": lr_at(cfg, *sparsifier.lr_position(max(step - 1, 0)), spe),
                   "density": session.density(),
                   "seconds": time.perf_counter() - t_epoch, **_floats(sparsifier.scalars())}  # fmt: skip
            history.append(row)
            runlog.epoch(row, bar)  # metrics.jsonl, the plain line (or the bar's), scalars
            if sparsifier.can_checkpoint(step - 1):
                checkpoint()
            if step >= stop_step:
                break
        # ---- the end: a checkpoint (without the final event, which a resume records again)
        if stopped and sparsifier.can_checkpoint(step - 1):
            checkpoint(mid_epoch=step % spe != 0)
        partial = None
        if stopped and float(sums[2]) > 0:  # stopped mid-epoch: that epoch's running means
            tr = _reduce_sum(dist_info, sums.clone())
            partial = {"train_loss": float(tr[0] / tr[2]), "train_acc": float(tr[1] / tr[2])}
        final = _final_metrics(model, data, dist_info, amp, partial or (history[-1] if history
                               else {}), sparsifier)  # fmt: skip
        record("final", **{k: v for k, v in final.items() if k != "R_s"})
        recorder.close()
        recorder.write_summary({"steps": step, "epochs": step / spe,
                                "n_events": recorder.n_events,
                                "density": session.density(), "final": final,
                                "history": history})  # fmt: skip
        runlog.finish(step, step / spe, final)
    finally:
        if bar is not None:
            bar.close()
        runlog.close()  # after an error: wandb.finish(exit_code=1); a no-op after finish
        try:
            recorder.close()
        except MaskTopoError:
            if sys.exc_info()[0] is None:
                raise
    return TrainResult(out_path, cfg, step, step / spe, recorder.n_events,
                       session.density(), history, final,
                       time.perf_counter() - t_start)  # fmt: skip


def _floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float)}


def _final_metrics(model, data: _Data, dist_info, amp, last: dict, sparsifier) -> dict:
    """Final metrics: train loss/accuracy of ``last`` (the last epoch or the stopped part of
    one), validation and test sets evaluated now."""
    out = {"train_loss": last.get("train_loss", float("nan")),
           "train_acc": last.get("train_acc", float("nan")),
           "val_loss": float("nan"), "val_acc": float("nan"),
           "test_loss": float("nan"), "test_acc": float("nan")}  # fmt: skip
    if data.val is not None:
        out["val_loss"], out["val_acc"] = evaluate(model, data.val, data.spec,
                                                   dist_info=dist_info, amp=amp)  # fmt: skip
    if data.test is not None:
        out["test_loss"], out["test_acc"] = evaluate(model, data.test, data.spec,
                                                     dist_info=dist_info, amp=amp)  # fmt: skip
    out.update(_floats(sparsifier.scalars()))
    return out
