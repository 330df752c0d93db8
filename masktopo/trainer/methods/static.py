"""Static sparse training: one mask, fixed for the whole run.

The mask is either a pruning-at-initialization mask, ``masktopo.pai.prune(model, init_method,
density, ...)`` (ERK by default; SNIP, GraSP, SynFlow, ... with exact counts, docs/pai.md), or a
mask file (``init_masks``: e.g. PAGS's ``best.safetensors``, any file ``masktopo.load`` reads, or
a run directory's last event). A file's layers must be exactly the model's maskable layers, with
the same shapes; when the file carries weights, they replace the model's initial weights (the
weights the mask was chosen on).
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import torch

from ...errors import MaskFileError, MaskValidationError
from ...zoo.models import maskable_parameters
from .base import Sparsifier

__all__ = ["Static", "masks_from_file", "shuffle_within_layers"]


class Static(Sparsifier):
    """A fixed mask from a PaI method or a mask file (module docstring)."""

    name: ClassVar[str] = "static"
    summary: ClassVar[str] = "a fixed mask from a PaI method or a mask file"
    defaults: ClassVar[dict] = {"init_method": "erk"}

    #: The fraction of maskable weights ever active (ITOP's :math:`R_s`): a fixed mask's
    #: density, set when the mask is drawn (None until then; kept in checkpoints).
    R_s: float | None = None

    def init_masks(self, model, maskable, generator, *, batches=None):
        """The PaI or file mask; the file's weights (on the parameters' devices) when it has them.

        Raises
        ------
        MaskFileError
            The mask file cannot be read, or its layers or shapes do not match ``maskable``.
        MaskValidationError
            A data-driven PaI method without ``batches``, or ``maskable`` that is not the model's
            maskable parameters (minus the first and/or last layer).
        """
        masks, weights = self._draw(model, maskable, generator, batches)
        kept = sum(int(m.sum()) for m in masks.values())
        self.R_s = kept / max(1, sum(m.numel() for m in masks.values()))
        return masks, weights

    def scalars(self) -> dict:
        """``R_s``: for a fixed mask, the fraction of weights ever active is its density
        (Liu et al. 2021, ITOP, the static baseline of Fig. 2), so static runs sit on the same
        R_s axis as the dynamic ones."""
        return {} if self.R_s is None else {"R_s": self.R_s}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "R_s": self.R_s}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.R_s = state.get("R_s")

    def _draw(self, model, maskable, generator, batches):
        self._check_maskable(maskable)
        if self.cfg.init_masks is not None:
            return masks_from_file(self.cfg.init_masks, model, maskable)
        from ... import pai

        ends = _dense_ends(model, maskable, strict=False)
        if ends is None:  # a set chosen by name patterns (masktopo.sparsify(layers=...))
            return self._on_subset(maskable, generator), None
        first_dense, last_dense = ends
        ms = pai.prune(
            model,
            self.cfg.init_method,
            self.cfg.density,
            batches=batches,
            generator=generator,
            first_dense=first_dense,
            last_dense=last_dense,
            iterations=self.cfg.pai_rounds,
            **_loss_option(self.cfg.dataset, self.cfg.init_method),
        )
        masks = {n: ms[n].to(p.device) for n, p in maskable.items()}
        if self.cfg.shuffle_masks:
            masks = shuffle_within_layers(masks, generator)
        return masks, None

    def _on_subset(self, maskable, generator):
        """Random masks with exact counts on a maskable set that is not the model's type-rule set
        (PaI scoring covers the type-rule set only): ``random`` (uniform layer densities) or a
        distribution (erk, er, uniform)."""
        from ...pai.densities import DISTRIBUTIONS
        from ..core import start_masks

        how = self.cfg.init_method
        dist = "uniform" if how == "random" else how
        if dist not in DISTRIBUTIONS:
            raise MaskValidationError(
                f"static: init_method {how!r} scores the model's Linear/Conv/attention weights; "
                f"on layers chosen by name use random, {', '.join(DISTRIBUTIONS)} or init_masks"
            )
        return start_masks(maskable, self.cfg.density, dist, generator)


def shuffle_within_layers(masks: dict[str, torch.Tensor], generator: torch.Generator):
    """Each layer's mask with its entries permuted uniformly at random (same count, same
    shape): the "shuffle" control of Frankle et al. (2021), *Pruning Neural Networks at
    Initialization: Why Are We Missing the Mark?*, ICLR, which keeps a PaI method's layer
    densities and discards which weights it chose. One permutation per layer, drawn from
    ``generator`` (on its device) in layer order."""
    out = {}
    for name, m in masks.items():
        perm = torch.randperm(m.numel(), generator=generator, device=generator.device)
        out[name] = m.reshape(-1)[perm.to(m.device)].reshape(m.shape)
    return out


def _loss_option(dataset, method: str) -> dict:
    """``loss=`` for a data-driven PaI method: the dataset's own training loss (one-logit BCE for
    a binary task such as cubist-spiral; cross-entropy otherwise, the scorers' default)."""
    from ... import pai
    from ...zoo import DATASETS

    cls = pai.METHODS.get(method)
    spec = DATASETS.get(dataset) if isinstance(dataset, str) else None
    if cls is None or cls.data_free or spec is None:
        return {}
    return {"loss": spec.loss_fn}


def masks_from_file(path, model, maskable):
    """A mask file's masks for exactly the ``maskable`` layers (bool, on the parameters'
    devices), and its weights (None when it has none).

    Raises
    ------
    MaskFileError
        The file cannot be read, or its layers or shapes do not match ``maskable``.
    """
    from ...inputs import load
    from ..start import mask_file

    path = mask_file(path)
    ms = load(path)
    names, want = list(ms), set(maskable)
    missing = [n for n in maskable if n not in ms]
    extra = [n for n in names if n not in want]
    if missing or extra:
        problem = "its layers are not the model's maskable layers"
        if missing:
            problem += f"; missing: {', '.join(missing)}"
        if extra:
            problem += f"; not maskable in this model: {', '.join(extra)}"
            if set(extra) <= set(maskable_parameters(model)):
                problem += " (kept dense by first_dense / last_dense)"
        raise MaskFileError(path, problem)
    for n, p in maskable.items():
        if tuple(ms[n].shape) != tuple(p.shape):
            raise MaskFileError(
                path,
                f"layer {n!r} has shape {tuple(ms[n].shape)}, the model's parameter "
                f"{tuple(p.shape)}",
            )
    empty = [n for n in maskable if not bool(ms[n].any())]
    if empty:  # layer collapse: trained as asked, never silently
        warnings.warn(f"{path}: keeps no weight of {len(empty)} layer(s) ({', '.join(empty)}): "
                      "the network is cut there (layer collapse) and cannot learn through it",
                      UserWarning, stacklevel=3)  # fmt: skip
    masks = {n: ms[n].to(p.device) for n, p in maskable.items()}
    weights = None
    if ms.has_weights:
        w = ms.weights
        weights = {n: w[n].to(device=p.device, dtype=p.dtype) for n, p in maskable.items()}
    return masks, weights


def _dense_ends(model: torch.nn.Module, maskable, *, strict: bool = True):
    """Which of the model's first/last maskable layers ``maskable`` leaves out (kept dense);
    None (``strict=False``) or an error when ``maskable`` is another set."""
    every = list(maskable_parameters(model))
    names = list(maskable)
    first = bool(every) and every[0] not in maskable
    last = len(every) > 1 and every[-1] not in maskable
    expected = every[int(first) : len(every) - int(last)]
    if names != expected:
        if not strict:
            return None
        raise MaskValidationError(
            "maskable must be masktopo.zoo.maskable_parameters(model) minus at most its first "
            f"and last layers; got {names}"
        )
    return first, last
