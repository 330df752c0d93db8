r"""Sparse training and mask recording in your own loop: :func:`sparsify` and :func:`record`.

Two lines in any PyTorch loop give every ``masktopo train`` method and the run directory that
``masktopo analyze``, ``plot`` and ``report`` read::

    sp = masktopo.sparsify(model, opt, method="rigl", density=0.05, total_steps=T,
                           update_interval=100, out="runs/mine")
    for x, y in loader:
        loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
        sp.step()                    # masks weights + optimizer state; updates/records on schedule
    sp.finish(metrics={"test_acc": acc})

``sparsify`` drives the same core as ``masktopo train``
(:class:`masktopo.trainer.session.SparseSession`): the same start masks, masking and methods, so
on a zoo model with the same seed and data order it gives the same masks.

How the loop is followed
------------------------
The schedule counts optimizer iterations. :func:`sparsify` wraps the optimizer's ``step`` on the
instance (as PyTorch's own LR schedulers do), which tells :meth:`SparseTraining.step` whether an
optimizer step ran since its last call:

- gradient accumulation: call ``sp.step()`` after every micro-batch or only after
  ``opt.step()``; calls with no optimizer step in between do nothing;
- AMP with ``GradScaler``: a step the scaler skips (inf gradients) is no iteration and no mask
  update;
- RigL's skipped optimizer step on update steps (``skip_step_on_update``): the wrapper does not
  update the parameters on those iterations (a ``closure`` passed to ``step``, as Lightning
  does, is still evaluated).

Adam/AdamW moments are masked with ``mask_adam=True``; SGD's momentum always. DDP: pass the
wrapped or the unwrapped model; every rank derives the same masks, only rank 0 writes. A
``torch.compile``\ d model is looked through (``_orig_mod``). FSDP2 (``fully_shard``) is not
supported: its parameters are sharded DTensors and a layer's mask needs the whole layer; the
error says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import types
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import git_commit, versions
from .checks import is_finite_number, is_int, is_integer, is_number
from .errors import MaskValidationError
from .maskable import find_maskable, transposed_layers, unwrap_model
from .masks import check_finite_values
from .runs import (
    EVENT_FIELDS,
    RunLock,
    RunWriter,
    check_out_dir,
    check_same_config,
    read_run_json,
)
from .runs.layout import LOCK_FILE
from .seeding import generator
from .trainer.config import METHOD_FIELDS

__all__ = ["SPARSIFY_OPTIONS", "MaskRecorder", "SparseTraining", "record", "sparsify"]

#: The :class:`~masktopo.trainer.config.TrainConfig` fields :func:`sparsify` takes as keywords
#: (the method-specific ones and these); their meaning and bounds are declared there.
SPARSIFY_OPTIONS = (
    "density",
    "seed",
    *METHOD_FIELDS,
    "init_masks",
    "first_dense",
    "last_dense",
    "mask_adam",
    "dump_weights",
)
STATE_FORMAT = "masktopo.sparsify"
STATE_VERSION = 1
_MASK_SOURCES = ("auto", "prune", "parametrize", "nonzero")


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _check_not_sharded(maskable: Mapping[str, nn.Parameter]) -> None:
    for name, p in maskable.items():
        if type(p.data).__name__ == "DTensor" or type(p).__name__ == "DTensor":
            raise MaskValidationError(
                f"parameter {name!r} is a sharded DTensor (FSDP2 fully_shard): masktopo masks "
                "whole layers and does not support FSDP; use DDP"
            )


def _check_ranks(kind: str, masks: Mapping[str, torch.Tensor]) -> None:
    from .trainer.session import masks_agree

    if not masks_agree(masks):
        raise MaskValidationError(
            f"sparsify: the masks differ across ranks at the {kind} event; every rank must call "
            "sparsify with the same seed and options and step() after the same optimizer steps"
        )


def _check_finite(params: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse NaN or infinite weights (naming the first such layer) before a run starts: the
    masks would be drawn from them, and no event could record them."""
    with torch.no_grad():
        for name, p in params.items():
            check_finite_values(f"{where}: parameter {name!r}", p, "; start from finite weights")


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    """The innermost ``torch.optim.Optimizer`` (Accelerate and Lightning wrap theirs)."""
    opt = optimizer
    for _ in range(8):
        inner = getattr(opt, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            opt = inner
        else:
            break
    if not isinstance(opt, torch.optim.Optimizer):
        raise MaskValidationError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    return opt


def _layers_json(maskable: Mapping[str, nn.Parameter], transposed: set[str]) -> list[dict]:
    out = []
    for n, p in maskable.items():
        item = {"name": n, "kind": "conv" if p.dim() > 2 else "linear", "shape": list(p.shape)}
        if n in transposed:
            item["stored"] = "in,out"
        out.append(item)
    return out


def check_example_inputs(example_inputs, where: str = "sparsify") -> None:
    """``example_inputs`` is None or a batch tensor (its shape past the first dimension is the
    model's input shape)."""
    if example_inputs is None:
        return
    if not isinstance(example_inputs, torch.Tensor):
        raise MaskValidationError(f"{where}: example_inputs must be a tensor (an input batch), "
                                  f"not a {type(example_inputs).__name__}")  # fmt: skip
    if example_inputs.dim() < 2:
        raise MaskValidationError(
            f"{where}: example_inputs must be an input batch [batch, ...], got shape "
            f"{tuple(example_inputs.shape)}"
        )


class _Graph:
    """The layer graph for run.json, from the shape of the model's first input (a forward
    pre-hook that removes itself), computed once at the first event after that forward."""

    def __init__(self, model: nn.Module, layers: list[str], example_inputs):
        self.model, self.layers = model, layers
        self.in_shape = None
        self.done = False
        self._hook = None
        if example_inputs is not None:
            self.in_shape = tuple(example_inputs.shape[1:])
        else:
            self._hook = model.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module, args, kwargs):
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is not None and first.dim() >= 2:
            self.in_shape = tuple(first.shape[1:])
        self.remove()

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def compute(self) -> tuple[dict | None, str | None]:
        """(graph, None) or (None, why not)."""
        self.done = True
        self.remove()
        if self.in_shape is None:
            return None, "no input seen (pass example_inputs= to describe the model's graph)"
        from .analysis.paths import layer_graph

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return layer_graph(self.model, self.in_shape, layers=self.layers), None
        except Exception as e:  # any tracing failure: the run goes on without it
            why = " ".join(str(e).split())[:300] or type(e).__name__
            return None, f"the model could not be traced ({type(e).__name__}: {why})"


_FLAGS = ("resume=True", "out")
#: The attribute of our ``optimizer.step`` wrapper that names its SparseTraining.
_MARK = "_masktopo_sparsify"


class _RunFolder:
    """The ``loop`` run directory of :func:`sparsify` and :func:`record` (rank 0 writes)."""

    def __init__(self, out, resume: bool, fields: dict, compare: dict):
        self.out = None if out is None else Path(os.fspath(out))
        self.lock = None
        self.resume = resume
        self.made: list[Path] = []  # folders this call created (a new run), deepest first
        self.had_lock = True  # whether out held a lock file before (then it stays)
        self.fields = fields
        self.writing = self.out is not None and _rank() == 0
        if not self.writing:
            self.writer = RunWriter(None)
            return
        check_out_dir(self.out, "loop", resume=resume, flags=_FLAGS)
        self.lock = RunLock(self.out)
        try:
            if resume:
                self.lock.acquire()
                saved = read_run_json(self.out).get("config", {})
                check_same_config(saved, compare, allowed=(), where=self.out)
            else:
                self.made = _missing_folders(self.out)
                self.had_lock = (self.out / LOCK_FILE).exists()
                self.out.mkdir(parents=True, exist_ok=True)
                self.lock.acquire()
                check_out_dir(self.out, "loop", resume=False, flags=_FLAGS)
            self.writer = RunWriter(self.out)
            if not resume:
                self.writer.write_run_json("loop", fields)
        except BaseException:
            self.release()
            raise

    def set_graph(self, graph: dict | None, why: str | None) -> None:
        if not self.writing:
            return
        self.fields["graph"] = graph
        if why:
            self.fields["graph_error"] = why
        self.writer.write_run_json("loop", self.fields)

    def finish(self, summary: dict) -> None:
        try:
            self.writer.close()
            if self.writing:
                self.writer.write_summary(summary)
        finally:
            self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard(self) -> None:
        """Undo a new run whose start failed: remove what it wrote (run.json, the init event)
        and the folders it created, so that ``out`` takes the same call again; a resumed run is
        only released."""
        new = self.writing and not self.resume and self.lock is not None
        try:
            with contextlib.suppress(Exception):
                self.writer.close()  # no write in flight while the files go
            if new:
                # check_out_dir found the folder new or empty (but a lock file), and the lock
                # kept other writers out since: all else in it was written by this run
                for p in self.out.iterdir():
                    if p.name == LOCK_FILE:
                        continue
                    with contextlib.suppress(OSError):
                        if p.is_dir() and not p.is_symlink():
                            shutil.rmtree(p)
                        else:
                            p.unlink()
        finally:
            self.release()
        if new and not self.had_lock:
            with contextlib.suppress(OSError):
                (self.out / LOCK_FILE).unlink()
        for d in self.made:  # empty now
            with contextlib.suppress(OSError):
                d.rmdir()


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist, deepest first."""
    out = []
    p = path.absolute()
    while not p.exists() and not p.is_symlink() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


#: Event fields a metric may not be named after (the writer's own columns).
_RESERVED = (*EVENT_FIELDS, "density")


def _floats(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for k, v in (metrics or {}).items():
        if k in _RESERVED:
            raise MaskValidationError(
                f"metric {k!r} is the name of an event field ({', '.join(_RESERVED)}); rename it"
            )
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not is_number(v):
            raise MaskValidationError(f"metric {k!r} must be a number, got {type(v).__name__}")
        out[str(k)] = float(v)
    return out


class SparseTraining:
    """A masktopo method in a user's loop (built by :func:`sparsify`; see its parameters).

    Attributes
    ----------
    session : masktopo.trainer.session.SparseSession
        The core shared with ``masktopo train``.
    steps : int
        Optimizer iterations seen so far.
    out : pathlib.Path or None
        The run directory.
    """

    def __init__(self, model, optimizer, *, method: str, total_steps: int,
                 steps_per_epoch: int | None = None, out=None, layers=None, exclude=None,
                 batches=None, example_inputs=None, resume: bool = False,
                 **options) -> None:  # fmt: skip
        from .trainer.config import TrainConfig, check_keys, resolve
        from .trainer.session import SparseSession

        unknown = sorted(set(options) - set(SPARSIFY_OPTIONS))
        if unknown:
            raise MaskValidationError(
                f"sparsify: {', '.join(map(repr, unknown))} is not a sparsify option; it takes "
                f"{', '.join(SPARSIFY_OPTIONS)} (and the loop's own settings stay yours)"
            )
        check_keys(options, "option")
        for key, value in (("total_steps", total_steps), ("steps_per_epoch", steps_per_epoch)):
            if value is None and key == "steps_per_epoch":
                continue
            if not is_integer(value) or value < 1:  # a numpy count (len of an array) is fine
                raise MaskValidationError(f"sparsify: {key} must be a positive integer, got "
                                          f"{value!r}")  # fmt: skip
        total_steps = int(total_steps)  # plain ints from here on (run.json, comparisons)
        steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        if "density" not in options:
            if method != "dense":
                raise MaskValidationError(f"sparsify: method {method!r} needs density=")
            options["density"] = 1.0
        if method == "gap" and steps_per_epoch is None:
            # its steps and fine-tuning are counted in epochs; the default epoch (the whole run)
            # would make one GaP step span all of training
            raise MaskValidationError(
                "sparsify: method 'gap' counts step_epochs and finetune_epochs in epochs: pass "
                "steps_per_epoch= (optimizer steps per epoch of your loop)"
            )
        cfg = resolve(TrainConfig(method=method, **options))
        base = unwrap_model(model)
        if not isinstance(base, nn.Module):
            raise MaskValidationError(f"sparsify: model must be a torch.nn.Module, got "
                                      f"{type(model).__name__}")  # fmt: skip
        maskable = find_maskable(base, layers=layers, exclude=exclude,
                                 first_dense=cfg.first_dense, last_dense=cfg.last_dense)  # fmt: skip
        if not maskable:
            raise MaskValidationError(
                f"sparsify: model {type(base).__name__} has no maskable layer (nn.Linear, "
                "nn.Conv1d/2d/3d, attention projections); name some with layers=['pattern*']"
            )
        _check_not_sharded(maskable)
        check_example_inputs(example_inputs)
        _check_finite(maskable, "sparsify")
        from .pai.densities import keeps_some

        keeps_some(cfg.density, sum(p.numel() for p in maskable.values()), "maskable weights")
        opt = _torch_optimizer(optimizer)
        if getattr(opt.step, _MARK, None) is not None:
            raise MaskValidationError(
                "sparsify: this optimizer already serves another sparsify run; finish() it first"
            )
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        missing = [n for n, p in maskable.items() if id(p) not in held]
        if missing:
            raise MaskValidationError(
                f"sparsify: the optimizer does not hold the model's parameter {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; build the optimizer from this model's parameters"
            )
        self.model = base
        self.optimizer = opt
        self.total_steps = total_steps
        spe = steps_per_epoch or total_steps
        device = next(iter(maskable.values())).device
        used = {k: cfg.to_dict()[k] for k in ("method", *SPARSIFY_OPTIONS)}
        run_config = {**used, "model": f"{type(base).__module__}.{type(base).__qualname__}",
                      "total_steps": total_steps, "steps_per_epoch": spe,
                      "layers_patterns": list(layers) if isinstance(layers, list | tuple)
                      else layers, "exclude": list(exclude) if isinstance(exclude, list | tuple)
                      else exclude}  # fmt: skip
        fields = {
            "git": git_commit(),
            "front": "sparsify",
            "config": run_config,
            "seed": cfg.seed,
            "world_size": torch.distributed.get_world_size()
            if torch.distributed.is_available() and torch.distributed.is_initialized()
            else 1,
            "steps_per_epoch": spe,
            "total_steps": total_steps,
            "versions": versions(),
            "layers": _layers_json(maskable, transposed_layers(base)),
        }
        world = fields["world_size"]
        from .trainer.methods import METHODS

        if world > 1 and METHODS[cfg.method].independent_ranks(cfg):
            raise MaskValidationError(
                f"sparsify: method {cfg.method!r} with these options trains one replica per "
                "process, which needs masktopo train's own loop; in your loop run it in one process"
            )
        self._folder = _RunFolder(out, resume, fields, run_config)
        self.out = self._folder.out
        self._graph = None
        self.steps = 0
        self._stepped = False
        self._finished = False
        self._awaiting_state = bool(resume)
        try:
            self.session = SparseSession(cfg, base, maskable, steps_per_epoch=spe,
                                         total_steps=total_steps, device=device,
                                         writer=self._folder.writer)  # fmt: skip
            self.session.on_event = _check_ranks
            self._graph = _Graph(base, list(maskable), example_inputs)
            if resume:  # run.json already has its graph (or why not)
                self._graph.done = True
                self._graph.remove()
            if resume:  # mask buffers for the model's state_dict; load_state_dict sets them
                if cfg.method != "dense":
                    self.session.attach({n: torch.ones_like(p, dtype=torch.bool)
                                         for n, p in maskable.items()})  # fmt: skip
            else:
                self.session.start(generator(cfg.seed, "masks", device=device), batches=batches)
                self.session.record("init")
        except BaseException:
            self._finished = True  # nothing left for __del__ to release
            if self._graph is not None:
                self._graph.remove()
            self._folder.discard()
            raise
        self._wrap_optimizer(opt)

    # -- the loop ---------------------------------------------------------------------------------
    def _wrap_optimizer(self, opt) -> None:
        """Put :meth:`_optimizer_step` in front of ``opt.step``, as a function bound to the
        optimizer (PyTorch's LR schedulers re-bind ``opt.step.__func__`` to the optimizer when
        they wrap it, before or after us); it carries the scheduler's marker when the step it
        replaces had one, so a scheduler made earlier does not warn."""
        self._orig_step = opt.step
        self._had_own_step = "step" in opt.__dict__
        sp = self

        def step(_opt, *args, **kwargs):
            return sp._optimizer_step(*args, **kwargs)

        setattr(step, _MARK, self)
        if getattr(self._orig_step, "_wrapped_by_lr_sched", False):
            step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
        self._step_func = step
        opt.step = types.MethodType(step, opt)  # type: ignore[method-assign]

    def _unwrap_optimizer(self) -> None:
        """Give ``opt.step`` back; a wrapper added after ours (an LR scheduler made later) stays,
        and ours then passes every call straight through."""
        opt = self.optimizer
        now = opt.__dict__.get("step")
        if getattr(now, "__func__", None) is self._step_func:
            if self._had_own_step:
                opt.step = self._orig_step  # type: ignore[method-assign]
            else:
                del opt.__dict__["step"]

    def _optimizer_step(self, *args, **kwargs):
        if self._finished:
            return self._orig_step(*args, **kwargs)
        if self.session.skip_step(self.steps):
            self._stepped = True
            self.optimizer._opt_called = True  # an LR scheduler made earlier: a step happened
            closure = kwargs.get("closure", args[0] if args else None)
            if closure is not None:
                with torch.enable_grad():
                    return closure()
            return None
        out = self._orig_step(*args, **kwargs)
        self._stepped = True
        return out

    def step(self) -> bool:
        """After ``optimizer.step()``: mask the weights and optimizer state, run the method's
        update when its schedule says so. True when an optimizer iteration was counted.

        Raises
        ------
        MaskValidationError
            After :meth:`finish`, or on a resumed run before :meth:`load_state_dict`.
        """
        if self._finished:
            raise MaskValidationError("sparsify: step() after finish(); the run is complete")
        if self._awaiting_state:
            raise MaskValidationError(
                "sparsify(resume=True): call load_state_dict(state) with the state saved in your "
                "checkpoint before step()"
            )
        if not self._stepped:
            return False
        self._stepped = False
        if self.steps == self.total_steps:
            warnings.warn(f"sparsify: more optimizer steps than total_steps={self.total_steps}; "
                          "the masks are only re-applied from here", stacklevel=2)  # fmt: skip
        if self.steps >= self.total_steps:
            if self.session.masking is not None:
                self.session.masking.apply(self.optimizer)
            self.steps += 1
            return True
        if not self._graph.done:
            self._folder.set_graph(*self._graph.compute())
        try:
            self.session.after_step(self.steps, self.optimizer)
        except MaskValidationError as e:
            if "p.grad is None" not in str(e):
                raise
            frozen = [n for n, p in self.session.maskable.items() if not p.requires_grad]
            if frozen:  # not a matter of where step() is called
                raise MaskValidationError(
                    f"{e}: layer {frozen[0]!r} is frozen (requires_grad=False) and has no "
                    f"gradient; unfreeze it or leave it out (exclude=[{frozen[0]!r}])"
                ) from None
            raise MaskValidationError(
                f"{e}: call sp.step() after optimizer.step() and before optimizer.zero_grad()"
            ) from None
        self.steps += 1
        return True

    def finish(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Record the final event (with ``metrics``, e.g. ``{"test_acc": 0.91}``), write
        summary.json, release the run directory and restore ``optimizer.step``."""
        if self._finished:
            raise MaskValidationError("sparsify: finish() was already called")
        scalars = _floats(metrics)
        self._finished = True
        self._unwrap_optimizer()
        try:
            if not self._graph.done:
                self._folder.set_graph(*self._graph.compute())
            self.session.steps_done = min(self.steps, self.total_steps)
            self.session.record("final", **scalars)
        finally:
            self._folder.finish({"steps": self.steps, "epochs": self.steps /
                                 self.session.steps_per_epoch,
                                 "n_events": self.session.writer.n_events,
                                 "density": self.session.density(),
                                 "final": {**scalars, **_plain(self.session.scalars())}})  # fmt: skip

    def close(self) -> None:
        """Stop without a final event (after a crash or an interrupted fit): flush the events
        written so far, restore ``optimizer.step``, release the run directory. The run stays
        resumable from the last ``state_dict()``; :meth:`finish` completes it instead."""
        if self._finished:
            return
        self._finished = True
        self._unwrap_optimizer()
        self._graph.remove()
        try:
            self.session.writer.close()
        finally:
            self._folder.release()

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (save it in your checkpoint next to the model's)."""
        masks = {n: m.detach().to("cpu", copy=True) for n, m in
                 self.session.current_masks().items()}  # fmt: skip
        self.session.writer.flush()
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "steps": self.steps,
                "n_events": self.session.writer.n_events,
                "events_digest": self.session.writer.digest(),
                "sparsifier": self.session.sparsifier.state_dict(), "masks": masks,
                "dense": self.session.masking is None}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output: masks, method state, step count; the run's
        events after the saved point are dropped (they are recorded again)."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise MaskValidationError("sparsify: load_state_dict takes SparseTraining.state_dict()")
        if state.get("version") != STATE_VERSION:
            raise MaskValidationError(f"sparsify: state version {state.get('version')!r} is not "
                                      "supported")  # fmt: skip
        s = self.session
        masks = state["masks"]
        if set(masks) != set(s.layer_names):
            raise MaskValidationError(
                f"sparsify: the saved masks cover {sorted(masks)}, this model's maskable layers "
                f"are {s.layer_names}"
            )
        if state.get("dense"):
            s.masking = None
        elif s.masking is None:
            s.attach(masks)
        else:
            s.masking.set_masks({n: m.to(s.masking.masks[n].device) for n, m in masks.items()},
                                self.optimizer)  # fmt: skip
        s.sparsifier.load_state_dict(state["sparsifier"])
        self.steps = int(state["steps"])
        s.steps_done = min(self.steps, self.total_steps)
        s.writer.truncate(int(state["n_events"]), state.get("events_digest"))
        self._awaiting_state = False
        self._stepped = False

    # -- conveniences -----------------------------------------------------------------------------
    @property
    def density(self) -> float:
        """Kept fraction of the maskable weights now."""
        return self.session.density()

    def nnz(self) -> dict[str, int]:
        """Kept entries per layer now."""
        return self.session.nnz()

    @property
    def n_events(self) -> int:
        """Events recorded so far."""
        return self.session.writer.n_events

    def __del__(self):  # a dropped, unfinished run releases its lock
        folder = getattr(self, "_folder", None)
        if folder is not None and not getattr(self, "_finished", True):
            try:
                folder.release()
            except Exception:  # interpreter shutdown
                pass


def _plain(d: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if is_finite_number(v)}


def sparsify(model: nn.Module, optimizer, *, method: str, total_steps: int,
             steps_per_epoch: int | None = None, out: str | os.PathLike | None = None,
             layers: str | Iterable[str] | None = None,
             exclude: str | Iterable[str] | None = None, batches=None, example_inputs=None,
             resume: bool = False, **options) -> SparseTraining:  # fmt: skip
    """Sparse-train ``model`` with a masktopo method in your own loop; call ``.step()`` after
    each ``optimizer.step()`` and ``.finish()`` at the end.

    Parameters
    ----------
    model : torch.nn.Module
        Your model (DDP- or ``torch.compile``-wrapped is fine). Its maskable weights are found by
        module type (:func:`masktopo.maskable.find_maskable`).
    optimizer : torch.optim.Optimizer
        The optimizer over the model's parameters (Accelerate/Lightning wrappers are looked
        through). Its ``step`` is wrapped on the instance until :meth:`SparseTraining.finish`.
    method : str
        Any ``masktopo train`` method: dense, static, itop, set, rigl, gmp, granet, ...
    total_steps : int
        Optimizer iterations the schedules span.
    steps_per_epoch : int, optional
        For the events' ``epoch`` column (default ``total_steps``: the epoch is the fraction of
        training done); required by ``method="gap"``, whose steps are counted in epochs.
    out : path, optional
        The run directory (new or empty; with ``resume``, the run to continue). None records
        nothing.
    layers, exclude : glob patterns, optional
        Override the maskable set by parameter name.
    batches : list of (inputs, targets), optional
        Minibatches for data-driven PaI masks (``method="static"`` with SNIP, GraSP, ...).
    example_inputs : torch.Tensor, optional
        An input batch, for run.json's layer graph (default: the shape of the first forward).
    resume : bool
        Continue the run in ``out``: then load your checkpoint and call
        :meth:`SparseTraining.load_state_dict` before the first ``step()``.
    **options
        :data:`SPARSIFY_OPTIONS`: ``density``, ``seed`` and the method's options, as declared in
        :class:`masktopo.trainer.config.TrainConfig` (``update_interval``, ``growth``, ...).

    Returns
    -------
    SparseTraining

    Raises
    ------
    MaskValidationError
        No maskable layer, an optimizer that does not hold the model's parameters, an option
        that is unknown, out of range or not used by the method, FSDP-sharded parameters.
    MaskFileError
        An unusable ``out``.
    """
    return SparseTraining(model, optimizer, method=method, total_steps=total_steps,
                          steps_per_epoch=steps_per_epoch, out=out, layers=layers,
                          exclude=exclude, batches=batches, example_inputs=example_inputs,
                          resume=resume, **options)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# record: the masks another library makes
# ---------------------------------------------------------------------------------------------
def _weight_source(module: nn.Module, attr: str, how: str):
    """``(mask_fn, weight_fn)`` of ``module.attr`` for mask source ``how``, or None."""
    import torch.nn.utils.parametrize as parametrize

    orig = attr + "_orig"
    if (
        how in ("auto", "prune")
        and orig in module._parameters
        and attr + "_mask" in module._buffers
    ):
        return (lambda: module._buffers[attr + "_mask"] != 0,
                lambda: getattr(module, attr))  # fmt: skip
    if how in ("auto", "parametrize") and parametrize.is_parametrized(module, attr):
        plist = module.parametrizations[attr]
        with_mask = [p for p in plist if isinstance(getattr(p, "mask", None), torch.Tensor)]
        if with_mask:

            def mask_fn():
                m = with_mask[0].mask != 0
                for p in with_mask[1:]:
                    m = m & (p.mask != 0)
                return m.expand(getattr(module, attr).shape)

            return mask_fn, lambda: getattr(module, attr)
    if how in ("auto", "nonzero"):
        return (lambda: getattr(module, attr) != 0), (lambda: getattr(module, attr))
    return None


def _recorded_layers(model: nn.Module, how: str, layers, exclude) -> dict[str, tuple]:
    import fnmatch

    from .maskable import type_rule_attrs

    include = [layers] if isinstance(layers, str) else list(layers or [])
    leave = [exclude] if isinstance(exclude, str) else list(exclude or [])
    out: dict[str, tuple] = {}
    for mod_name, m in model.named_modules():
        if isinstance(m, nn.Embedding | nn.EmbeddingBag):
            continue
        if include:
            attrs = {*m._parameters, *(n[: -len("_orig")] for n in m._parameters
                                       if n.endswith("_orig"))}  # fmt: skip
            if hasattr(m, "parametrizations"):
                attrs |= set(m.parametrizations.keys())
        else:
            attrs = set(type_rule_attrs(m))
        for attr in sorted(attrs):
            name = f"{mod_name}.{attr}" if mod_name else attr
            if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in leave):
                continue
            w = getattr(m, attr, None)
            if not isinstance(w, torch.Tensor) or w.dim() < 2:
                continue
            src = _weight_source(m, attr, how)
            if src is not None:
                out[name] = src
    return out


class MaskRecorder:
    """Records the masks another pruning library makes (built by :func:`record`)."""

    def __init__(self, model, out, *, every: int = 500, mask: str = "auto", layers=None,
                 exclude=None, steps_per_epoch: int | None = None, dump_weights: str = "all",
                 example_inputs=None) -> None:  # fmt: skip
        if mask not in _MASK_SOURCES:
            from .errors import UnknownNameError

            raise UnknownNameError("mask source", mask, _MASK_SOURCES)
        if not is_int(every) or every < 1:
            raise MaskValidationError(f"record: every must be a positive integer, got {every!r}")
        if dump_weights not in ("all", "ends", "none"):
            raise MaskValidationError(f"record: dump_weights must be all, ends or none, got "
                                      f"{dump_weights!r}")  # fmt: skip
        base = unwrap_model(model)
        if not isinstance(base, nn.Module):
            raise MaskValidationError(f"record: model must be a torch.nn.Module, got "
                                      f"{type(model).__name__}")  # fmt: skip
        check_example_inputs(example_inputs, "record")
        self.sources = _recorded_layers(base, mask, layers, exclude)
        if not self.sources:
            raise MaskValidationError(
                f"record: model {type(base).__name__} has no layer with a {mask} mask "
                "(nn.Linear, nn.Conv*, attention projections); name some with layers=[...]"
            )
        self.every = every
        self.mask = mask
        self.dump_weights = dump_weights
        self.spe = steps_per_epoch or every
        if dump_weights != "none":  # the init event's weights: refused there, after run.json
            _check_finite({n: w() for n, (_, w) in self.sources.items()}, "record")
        shapes = {n: tuple(w().shape) for n, (_, w) in self.sources.items()}
        config = {"front": "record", "mask": mask, "every": every, "dump_weights": dump_weights,
                  "model": f"{type(base).__module__}.{type(base).__qualname__}"}  # fmt: skip
        fields = {"git": git_commit(), "front": "record", "config": config,
                  "steps_per_epoch": self.spe, "versions": versions(),
                  "layers": [{"name": n, "kind": "conv" if len(s) > 2 else "linear",
                              "shape": list(s)} for n, s in shapes.items()]}  # fmt: skip
        self._folder = _RunFolder(out, False, fields, config)
        self.out = self._folder.out
        self.steps = 0
        self._finished = False
        self._graph = None
        try:
            self._graph = _Graph(base, list(self.sources), example_inputs)
            self.snapshot("init")
        except BaseException:
            self._finished = True
            if self._graph is not None:
                self._graph.remove()
            self._folder.discard()
            raise

    @torch.no_grad()
    def snapshot(self, kind: str = "update", **scalars) -> int:
        """Record the current masks now as an event of ``kind``; returns its index."""
        if self._finished:
            raise MaskValidationError("record: snapshot() after finish(); the run is complete")
        if not isinstance(kind, str) or not kind:
            raise MaskValidationError(
                f"record: snapshot kind must be a non-empty string (such as 'update'), got {kind!r}"
            )
        masks, weights = {}, {}
        for n, (mask_fn, weight_fn) in self.sources.items():
            masks[n] = mask_fn().detach().to(torch.bool)
            weights[n] = weight_fn().detach()
        dump = self.dump_weights == "all" or (self.dump_weights == "ends" and
                                              kind in ("init", "final"))  # fmt: skip
        return self._folder.writer.record(masks, weights if dump else None, kind=kind,
                                          step=self.steps, epoch=self.steps / self.spe,
                                          scalars=_floats(scalars))  # fmt: skip

    def step(self) -> bool:
        """Count one training step; record an event every ``every`` steps (True when it did)."""
        if self._finished:
            raise MaskValidationError("record: step() after finish(); the run is complete")
        self.steps += 1
        if not self._graph.done:
            self._folder.set_graph(*self._graph.compute())
        if self.steps % self.every == 0:
            self.snapshot("update")
            return True
        return False

    def finish(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Record the final event (with ``metrics``) and complete the run directory."""
        if self._finished:
            raise MaskValidationError("record: finish() was already called")
        scalars = _floats(metrics)
        try:
            if not self._graph.done:
                self._folder.set_graph(*self._graph.compute())
            self.snapshot("final", **scalars)
        finally:
            self._finished = True
            self._folder.finish({"steps": self.steps, "epochs": self.steps / self.spe,
                                 "n_events": self._folder.writer.n_events, "final": scalars})  # fmt: skip

    @property
    def n_events(self) -> int:
        return self._folder.writer.n_events


def record(model: nn.Module, out: str | os.PathLike | None, *, every: int = 500,
           mask: str = "auto", layers=None, exclude=None, steps_per_epoch: int | None = None,
           dump_weights: str = "all", example_inputs=None) -> MaskRecorder:  # fmt: skip
    """Record the masks that another pruning method puts on ``model`` into a run directory.

    Parameters
    ----------
    model : torch.nn.Module
    out : path or None
        The run directory (new or empty); None records nothing.
    every : int
        Record an event every this many :meth:`MaskRecorder.step` calls (plus ``init`` now and
        ``final`` at :meth:`MaskRecorder.finish`; :meth:`MaskRecorder.snapshot` records one now).
    mask : {"auto", "prune", "parametrize", "nonzero"}
        Where the masks are: ``torch.nn.utils.prune``'s ``weight_mask`` buffers (``prune``),
        parametrizations that carry a ``mask`` such as torch.ao's ``FakeSparsity``
        (``parametrize``), or the zeros of the weights (``nonzero``). ``auto`` takes the first of
        those that a layer has.
    layers, exclude : glob patterns, optional
        Which weights (default: the maskable module types, as :func:`sparsify`).
    steps_per_epoch : int, optional
        For the events' ``epoch`` (default ``every``).
    dump_weights : {"all", "ends", "none"}
        Weights (at the kept positions) in every event, in the first and last, or never.
    example_inputs : torch.Tensor, optional
        An input batch for run.json's layer graph (default: the first forward's).

    Returns
    -------
    MaskRecorder
    """
    return MaskRecorder(model, out, every=every, mask=mask, layers=layers, exclude=exclude,
                        steps_per_epoch=steps_per_epoch, dump_weights=dump_weights,
                        example_inputs=example_inputs)  # fmt: skip
