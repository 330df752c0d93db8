r"""Masks attached to a model as bool buffers, re-applied after every optimizer step.

The one mechanism (methods-spec §1.2, ITOP/GraNet semantics): each mask is a ``torch.bool``
buffer ``"<attr>_mask"`` (e.g. ``weight_mask``) on the module that owns the parameter, so the masks
travel with ``model.state_dict()``, ``model.to(...)`` and checkpoints. Nothing is hooked or
patched: after ``optimizer.step()`` the training loop calls :meth:`Masking.apply`, which does

.. math:: w \leftarrow w \odot m, \qquad b \leftarrow b \odot m

for every masked weight :math:`w` and its SGD momentum buffer :math:`b` (and AdamW's first and
second moments when ``mask_adam``), with ``torch._foreach_mul_`` (one fused kernel per list: the
masks are also cached as 0/1 tensors in the weights' dtype) and no host synchronisation.
Gradients are never masked, so ``p.grad`` holds the dense gradient of the last minibatch, which
RigL-style growth reads on update steps. Because a masked coordinate's weight and momentum are
zeroed after every step, this trains exactly the masked network (weight decay included: it acts
on zeros), as gradient masking would.

Memory format: the buffers are created with the parameter's strides (``empty_like``), and
``model.to(memory_format=torch.channels_last)`` converts 4-D buffers with the parameters, so a
mask and its weight keep the same layout. :class:`Masking` looks the live buffers and parameters
up on their modules at each call, so it stays valid after ``model.to(...)`` or
``model.load_state_dict(...)`` replace them.

Distributed data parallel: the mask buffers are added to the model's
``_ddp_params_and_buffers_to_ignore`` (PyTorch's DDP option for this), so DDP does not broadcast
them from rank 0 at every forward; every rank derives the same masks itself (same seeds, the same
all-reduced gradients), which the loop can check.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import MaskValidationError
from ..masks import MaskSet

__all__ = ["ADAM_STATE", "MOMENTUM_STATE", "Masking", "mask_buffer_key"]

#: Optimizer state masked by :meth:`Masking.apply` always (SGD's momentum).
MOMENTUM_STATE = ("momentum_buffer",)
#: Optimizer state masked when ``mask_adam`` (Adam/AdamW moments; ``max_exp_avg_sq``: AMSGrad).
ADAM_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_SUFFIX = "_mask"


def mask_buffer_key(name: str) -> str:
    """The ``state_dict`` key of the mask of parameter ``name``.

    >>> mask_buffer_key("layer1.0.conv1.weight")
    'layer1.0.conv1.weight_mask'
    """
    return name + _SUFFIX


def _split(name: str) -> tuple[str, str]:
    owner, _, attr = name.rpartition(".")
    return owner, attr


class Masking:
    """Bool masks on a model's parameters, applied after each optimizer step.

    Parameters
    ----------
    model : torch.nn.Module
        The unwrapped model (not the ``DistributedDataParallel`` wrapper).
    masks : Mapping[str, torch.Tensor]
        Parameter name (as in ``model.named_parameters()``) -> ``torch.bool`` mask of the
        parameter's shape. Empty: nothing is masked (dense training). Each mask is copied into a
        buffer ``<attr>_mask`` on the owning module (an existing buffer of that name, e.g. from an
        earlier :class:`Masking` on the same model, is reused), then applied to the weights.
    mask_adam : bool, optional
        Also zero AdamW's ``exp_avg``/``exp_avg_sq`` (and AMSGrad's ``max_exp_avg_sq``) at masked
        entries. ITOP and GraNet do not (methods-spec §1.2).

    Attributes
    ----------
    names : list of str
        The masked parameters, in the order of ``masks``.

    Raises
    ------
    MaskValidationError
        A name that is not a parameter of the model, a mask that is not bool or whose shape differs
        from its parameter's, a name used twice for one tensor.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> mk = Masking(net, {"weight": torch.tensor([[True, False, True], [False, False, True]])})
    >>> mk.nnz(), bool(net.weight[0, 1] == 0), sorted(net.state_dict())
    ({'weight': 3}, True, ['bias', 'weight', 'weight_mask'])
    """

    def __init__(
        self, model: nn.Module, masks: Mapping[str, torch.Tensor], *, mask_adam: bool = False
    ):
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise MaskValidationError("Masking takes the unwrapped model (ddp.module), not DDP")
        self.model = model
        self.mask_adam = bool(mask_adam)
        self.names: list[str] = list(masks)
        self._slots: list[tuple[nn.Module, str, str]] = []  # (owner, param attr, buffer attr)
        self._factor_key: list | None = None
        self._factor_cache: list[torch.Tensor] = []
        self._nnz_cache: dict[str, tuple[torch.Tensor, int, int]] = {}  # name: (buf, version, nnz)
        params = dict(model.named_parameters())
        seen: set[int] = set()
        for name in self.names:
            if name not in params:
                raise MaskValidationError(f"mask {name!r}: the model has no parameter of that name")
            p = params[name]
            if id(p) in seen:
                raise MaskValidationError(f"mask {name!r}: that parameter is masked twice")
            seen.add(id(p))
            mask = masks[name]
            _check(name, mask, p)
            owner_name, attr = _split(name)
            owner = model.get_submodule(owner_name)
            buf_attr = attr + _SUFFIX
            buf = owner._buffers.get(buf_attr)
            if buf is None or buf.shape != p.shape or buf.dtype != torch.bool:
                if hasattr(owner, buf_attr) and buf_attr not in owner._buffers:
                    raise MaskValidationError(
                        f"mask {name!r}: module {owner_name or 'model'!r} already has an attribute "
                        f"{buf_attr!r}"
                    )
                buf = torch.empty_like(p, dtype=torch.bool, requires_grad=False)
                owner.register_buffer(buf_attr, buf, persistent=True)
            buf.copy_(mask.to(buf.device))
            self._slots.append((owner, attr, buf_attr))
        self._ignore_in_ddp()
        self.apply()

    # -- live tensors -----------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, nn.Parameter]:
        """Name -> the masked parameter itself (looked up on its module)."""
        return {n: o._parameters[a] for n, (o, a, _) in zip(self.names, self._slots, strict=True)}

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Name -> the live mask buffer (a change to it changes the model's mask)."""
        return {n: o._buffers[b] for n, (o, _, b) in zip(self.names, self._slots, strict=True)}

    def buffer_keys(self) -> list[str]:
        """The masks' keys in ``model.state_dict()``, in the order of :attr:`names`."""
        return [mask_buffer_key(n) for n in self.names]

    def _ignore_in_ddp(self) -> None:
        keys = self.buffer_keys()
        if not keys:
            return
        old = list(getattr(self.model, "_ddp_params_and_buffers_to_ignore", ()))
        new = old + [k for k in keys if k not in old]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self.model, new
        )

    # -- application ------------------------------------------------------------------------------
    def _state(self, optimizer, keys) -> tuple[list[torch.Tensor], list[int]]:
        """Optimizer state tensors named ``keys`` of the masked parameters, with their layer index."""
        tensors: list[torch.Tensor] = []
        index: list[int] = []
        if optimizer is None:
            return tensors, index
        state = optimizer.state
        for i, (o, a, _) in enumerate(self._slots):
            p = o._parameters[a]
            st = state.get(p)
            if not st:
                continue
            for key in keys:
                t = st.get(key)
                if isinstance(t, torch.Tensor) and t.shape == p.shape:
                    tensors.append(t)
                    index.append(i)
        return tensors, index

    def _state_keys(self) -> tuple[str, ...]:
        return MOMENTUM_STATE + ADAM_STATE if self.mask_adam else MOMENTUM_STATE

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        r"""Zero the masked entries: :math:`w \leftarrow w \odot m` and the optimizer's state.

        SGD's ``momentum_buffer`` always; AdamW's ``exp_avg``, ``exp_avg_sq`` (and
        ``max_exp_avg_sq``) when ``mask_adam``. Two fused ``torch._foreach_mul_`` calls (weights,
        state), no host synchronisation. Call it after every ``optimizer.step()``.
        """
        if not self.names:
            return
        slots = self._slots
        weights = [o._parameters[a] for o, a, _ in slots]
        factors = self._factors(weights)
        torch._foreach_mul_(weights, factors)
        tensors, index = self._state(optimizer, self._state_keys())
        if tensors:
            factors_of = [
                factors[i] if t.dtype == factors[i].dtype else factors[i].to(t.dtype)
                for t, i in zip(tensors, index, strict=True)
            ]
            torch._foreach_mul_(tensors, factors_of)

    def _factors(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """The masks as 0/1 tensors in the weights' dtype and layout, cached.

        ``_foreach_mul_`` runs as one fused kernel only when both lists have one dtype; a bool
        mask makes it fall back to one kernel per tensor with type promotion (8x slower on the
        CPU). The cache costs one copy of the masked weights; it is rebuilt when a mask buffer is
        replaced or modified in place (tensor identity and version counter, no synchronisation).
        """
        bufs = [o._buffers[b] for o, _, b in self._slots]
        key = [(buf, buf._version, w.dtype, w.device) for buf, w in zip(bufs, weights, strict=True)]
        old = self._factor_key
        if (
            old is None
            or len(old) != len(key)
            or any(a[0] is not b[0] or a[1:] != b[1:] for a, b in zip(old, key, strict=True))
        ):
            self._factor_cache = [buf.to(w.dtype) for buf, w in zip(bufs, weights, strict=True)]
            self._factor_key = key
        return self._factor_cache

    @torch.no_grad()
    def set_masks(
        self,
        new: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None = None,
        *,
        nnz: Mapping[str, int] | None = None,
    ) -> None:
        """Copy new masks into the buffers (same names, shapes, bool), then :meth:`apply`.

        ``new`` may hold a subset of the layers; the others keep their masks. ``nnz``: the new
        masks' entry counts when the caller knows them by construction (a drop-and-grow keeps
        them), so that :meth:`nnz` need not count them on the device.
        """
        live = self.masks
        for name, mask in new.items():
            if name not in live:
                raise MaskValidationError(f"mask {name!r} is not one of the masked layers")
            _check(name, mask, live[name])
        for name, mask in new.items():
            live[name].copy_(mask)
        for name, count in (nnz or {}).items():
            if name in new:
                buf = live[name]
                self._nnz_cache[name] = (buf, buf._version, int(count))
        self.apply(optimizer)

    @torch.no_grad()
    def zero_entries(
        self, where: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Set weights and all their optimizer state (momentum, Adam moments) to 0 at ``where``.

        Used for new connections at regrowth (methods-spec §1.4): a grown weight starts at 0 with
        no momentum history, whatever ``mask_adam`` says.
        """
        if not where:
            return
        params = self.params
        keep = {n: ~w for n, w in where.items()}
        torch._foreach_mul_([params[n] for n in keep], list(keep.values()))
        if optimizer is None:
            return
        for n, k in keep.items():
            st = optimizer.state.get(params[n])
            for key in MOMENTUM_STATE + ADAM_STATE:
                t = (st or {}).get(key)
                if isinstance(t, torch.Tensor) and t.shape == k.shape:
                    t.mul_(k)

    # -- summaries --------------------------------------------------------------------------------
    def nnz(self) -> dict[str, int]:
        """Kept entries per layer.

        Counted on the device (one synchronisation) for the masks that changed since they were
        last counted or set with known counts (:meth:`set_masks`); the others are remembered
        (buffer identity and version counter, as :meth:`_factors`).
        """
        masks = self.masks
        cache = self._nnz_cache
        stale = [
            n for n, m in masks.items()
            if n not in cache or cache[n][0] is not m or cache[n][1] != m._version
        ]  # fmt: skip
        if stale:
            counts = torch.stack([masks[n].count_nonzero() for n in stale]).tolist()
            for n, c in zip(stale, counts, strict=True):
                cache[n] = (masks[n], masks[n]._version, int(c))
        return {n: cache[n][2] for n in masks}

    def numel(self) -> dict[str, int]:
        """Entries per layer."""
        return {n: m.numel() for n, m in self.masks.items()}

    def density(self) -> float:
        """Kept entries over all entries of the masked layers (1.0 when nothing is masked)."""
        total = sum(self.numel().values())
        return sum(self.nnz().values()) / total if total else 1.0

    @torch.no_grad()
    def maskset(self, *, weights: bool) -> MaskSet:
        """The current masks (and, with ``weights``, the masked weights) as a CPU :class:`MaskSet`.

        Layer kinds come from the shapes (2-D linear, 3-D to 5-D conv); copies, contiguous.
        """
        masks = {n: m.detach().to("cpu", copy=True).contiguous() for n, m in self.masks.items()}
        w = None
        if weights:
            w = {n: p.detach().to("cpu", copy=True).contiguous() for n, p in self.params.items()}
        return MaskSet(masks, weights=w)


def _check(name: str, mask, ref: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor):
        raise MaskValidationError(f"mask {name!r} is a {type(mask).__name__}, not a tensor")
    if mask.dtype != torch.bool:
        raise MaskValidationError(f"mask {name!r} has dtype {mask.dtype}, expected torch.bool")
    if mask.shape != ref.shape:
        raise MaskValidationError(
            f"mask {name!r} has shape {tuple(mask.shape)}, its parameter {tuple(ref.shape)}"
        )
