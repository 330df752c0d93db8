"""The :class:`MaskSet` value type: the one currency between masktopo's subpackages.

A MaskSet is an ordered mapping from parameter name to a ``torch.bool`` tensor in PyTorch's native
orientation (``[out, in]`` for a linear layer, ``[out, in, *kernel]`` for a convolution), with each
layer's kind and shape, and optionally the weights that go with the masks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import MaskValidationError, UnknownNameError

LAYER_KINDS = ("linear", "conv")


@dataclass(frozen=True)
class LayerInfo:
    """Name, kind (``"linear"`` or ``"conv"``) and shape of one masked layer."""

    name: str
    kind: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def infer_kind(shape: tuple[int, ...]) -> str:
    """Layer kind from a weight shape: 2-D is ``"linear"``, 3-D to 5-D is ``"conv"``."""
    if len(shape) == 2:
        return "linear"
    if 3 <= len(shape) <= 5:
        return "conv"
    raise MaskValidationError(
        f"a mask of shape {tuple(shape)} is neither linear ([out, in]) nor conv ([out, in, *kernel])"
    )


def check_name(name: Any) -> str:
    """Validate a layer name: a non-empty string without whitespace or control characters."""
    if not isinstance(name, str) or not name:
        raise MaskValidationError(f"layer name {name!r} is not a non-empty string")
    if any(c.isspace() or not c.isprintable() for c in name):
        raise MaskValidationError(f"layer name {name!r} contains whitespace or control characters")
    return name


def check_values_tensor(name: str, t: Any, what: str = "mask") -> torch.Tensor:
    """``t`` when it is a tensor whose values can be read: strided (not sparse) and not on the
    meta device. One rule for :class:`MaskSet`, the file readers and the analysis functions."""
    if not isinstance(t, torch.Tensor):
        raise MaskValidationError(f"layer {name!r}: {what} is a {type(t).__name__}, not a tensor")
    if t.layout != torch.strided:
        raise MaskValidationError(
            f"layer {name!r}: {what} is a sparse tensor ({t.layout}); pass a dense one "
            "(tensor.to_dense())"
        )
    if t.device.type == "meta":
        raise MaskValidationError(
            f"layer {name!r}: {what} is on the meta device: it has a shape but no values"
        )
    return t


def layer_tensor(name: str, value: Any, what: str) -> torch.Tensor:
    """``value`` as a tensor: a tensor as it is, an array or nested lists converted; anything
    else (None, a string, ragged lists) is a one-line error naming the layer and ``what``."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, RuntimeError, ValueError):
        raise MaskValidationError(
            f"layer {name!r}: {what} is a {type(value).__name__}, not a tensor"
        ) from None


def check_layer_mask(name: str, mask: Any) -> torch.Tensor:
    """A layer mask as a bool tensor, by the rules the file readers apply: a dense tensor (or
    array-like) of 0/1 values, not empty, with 2 (``[out, in]``) to 5 (``[out, in, *kernel]``)
    dimensions.

    Raises
    ------
    MaskValidationError
        For None or anything that is not array-like, a sparse or meta tensor, values other than
        0 and 1, an empty or 1-D or 6-D shape.
    """
    mask = layer_tensor(name, mask, "mask")
    check_values_tensor(name, mask)
    mask = to_bool_mask(name, mask)
    shape = tuple(mask.shape)
    if any(s == 0 for s in shape):
        raise MaskValidationError(f"layer {name!r}: mask of shape {shape} is empty")
    try:
        infer_kind(shape)
    except MaskValidationError as e:
        raise MaskValidationError(f"layer {name!r}: {e}") from None
    return mask


def _check_mask(name: str, mask: Any, kind: str | None) -> tuple[torch.Tensor, str]:
    check_values_tensor(name, mask)
    if mask.dtype != torch.bool:
        raise MaskValidationError(
            f"layer {name!r}: mask dtype is {mask.dtype}, expected torch.bool "
            "(use MaskSet.from_tensors to convert 0/1 tensors)"
        )
    shape = tuple(mask.shape)
    if any(s == 0 for s in shape):
        raise MaskValidationError(f"layer {name!r}: mask of shape {shape} is empty")
    try:
        inferred = infer_kind(shape)
    except MaskValidationError as e:
        raise MaskValidationError(f"layer {name!r}: {e}") from None
    if kind is None:
        kind = inferred
    elif kind not in LAYER_KINDS:
        raise UnknownNameError("layer kind", kind, LAYER_KINDS)
    elif kind != inferred:
        raise MaskValidationError(f"layer {name!r}: kind {kind!r} does not fit mask shape {shape}")
    return mask, kind


def check_weight(name: str, weight: Any, mask: torch.Tensor) -> torch.Tensor:
    """``weight`` when it can be the weight of ``mask``: a dense floating-point tensor of the
    mask's shape with finite values (one rule for MaskSet, the readers and the analysis)."""
    check_values_tensor(name, weight, "weight")
    if not weight.is_floating_point():
        raise MaskValidationError(
            f"layer {name!r}: weight dtype {weight.dtype} is not floating point"
        )
    if tuple(weight.shape) != tuple(mask.shape):
        raise MaskValidationError(
            f"layer {name!r}: weight shape {tuple(weight.shape)} does not match mask shape "
            f"{tuple(mask.shape)}"
        )
    # Fast path: one reduction. NaN and inf propagate through additions in any order (inf + -inf
    # is NaN), so a finite sum proves every element finite. The converse can fail only by overflow
    # (finite values near the dtype's maximum), and then the exact elementwise scan decides, so
    # the outcome is always the elementwise one. The float32 accumulator cannot overflow for
    # float16/float8 weights and is as fast as a float32 tensor's own sum; float64 weights sum in
    # float64.
    try:
        finite = _sum_is_finite(weight)
    except (NotImplementedError, RuntimeError):  # e.g. packed float4: no arithmetic at all
        raise MaskValidationError(
            f"layer {name!r}: weight dtype {weight.dtype} is not supported"
        ) from None
    if not finite:
        _check_finite_elementwise(name, weight)
    return weight


def _sum_is_finite(t: torch.Tensor) -> bool:
    """Whether the sum of the floating-point tensor ``t`` is finite (the fast path above:
    then every element is; float32 accumulator, float64 for float64 tensors)."""
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    return bool(torch.isfinite(t.sum(dtype=acc)))


def _non_finite(t: torch.Tensor) -> tuple[int, int]:
    """The counts of NaN and of ±inf values in ``t``, exactly."""
    if t.element_size() == 1:  # float8: isfinite/isinf are missing or wrong; exact in f32
        t = t.float()
    return int(torch.count_nonzero(torch.isnan(t))), int(torch.count_nonzero(torch.isinf(t)))


def check_finite_values(label: str, t: torch.Tensor, hint: str = "") -> None:
    """Raise :class:`~masktopo.errors.MaskValidationError` ``{label} has N NaN or infinite
    value(s){hint}`` when the floating-point tensor ``t`` holds any; one reduction when it
    holds none (:func:`check_weight`'s fast path), the exact count otherwise. Tensors that
    are not floating point pass."""
    if t.is_floating_point() and not _sum_is_finite(t):
        n = sum(_non_finite(t))
        if n:
            raise MaskValidationError(f"{label} has {n} NaN or infinite value(s){hint}")


def _check_finite_elementwise(name: str, weight: torch.Tensor) -> None:
    """Raise naming the count and kinds (NaN, inf) of non-finite weights, if there are any."""
    n_nan, n_inf = _non_finite(weight)
    if n_nan or n_inf:
        kinds = [k for k, n in (("NaN", n_nan), ("inf", n_inf)) if n]
        raise MaskValidationError(
            f"layer {name!r}: weight has {n_nan + n_inf} {'/'.join(kinds)} value(s)"
        )


def to_bool_mask(name: str, tensor: Any) -> torch.Tensor:
    """Convert a 0/1 tensor (bool, integer or float) to a bool mask, rejecting other values."""
    if not isinstance(tensor, torch.Tensor):
        raise MaskValidationError(
            f"layer {name!r}: mask is a {type(tensor).__name__}, not a tensor"
        )
    if tensor.dtype == torch.bool:
        return tensor
    if tensor.is_complex():
        raise MaskValidationError(f"layer {name!r}: mask dtype {tensor.dtype} is complex")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise MaskValidationError(f"layer {name!r}: mask has NaN or inf values")
    ones = tensor == 1
    if not bool((ones | (tensor == 0)).all()):
        bad = tensor[~(ones | (tensor == 0))]
        raise MaskValidationError(
            f"layer {name!r}: mask has values other than 0 and 1 (e.g. {bad.flatten()[0].item()!r})"
        )
    return ones


def attach_positions(mask: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    """Remember the kept entries of ``mask`` as ascending flat (C-order) positions.

    Whoever builds a mask from positions (PAGS draws them) can attach them, so that readers
    (:mod:`masktopo.analysis`) skip scanning the dense mask. The note is ignored as soon as the
    mask changes in place (its version counter moves on) and is not copied with the tensor.
    Returns ``mask``.
    """
    mask._masktopo_positions = (mask._version, positions)
    return mask


def known_positions(mask: torch.Tensor) -> np.ndarray | None:
    """The positions attached by :func:`attach_positions`, if the mask is unchanged since."""
    entry = getattr(mask, "_masktopo_positions", None)
    if entry is not None and entry[0] == mask._version:
        return entry[1]
    return None


def mask_from_positions(shape, positions: np.ndarray, device=None) -> torch.Tensor:
    """The bool mask of ``shape`` that keeps the ascending int64 flat (C-order) ``positions``,
    on ``device`` (default the CPU), with the positions attached (:func:`attach_positions`)."""
    flat = torch.zeros(math.prod(shape), dtype=torch.bool)
    flat[torch.from_numpy(positions)] = True
    mask = flat.reshape(tuple(shape))
    return attach_positions(mask if device is None else mask.to(device), positions)


def kept_positions(mask: torch.Tensor) -> np.ndarray:
    """Ascending int64 flat (C-order) positions of the kept entries of ``mask``: those attached
    by :func:`attach_positions` when the mask is unchanged since, else a scan."""
    known = known_positions(mask)
    if known is not None:
        return known
    return np.flatnonzero(mask.detach().reshape(-1).cpu().numpy())


def check_layer_mapping(value: Any, what: str) -> None:
    """Raise :class:`~masktopo.errors.MaskValidationError` unless ``value`` (named ``what``:
    masks, weights) is a mapping of layer name to tensor."""
    if not isinstance(value, Mapping):
        raise MaskValidationError(
            f"{what} must be a mapping of layer name to tensor, not a {type(value).__name__}"
        )


class MaskSet(Mapping[str, torch.Tensor]):
    """Ordered layer name → bool mask, with layer kinds, shapes and optional weights.

    Parameters
    ----------
    masks : Mapping[str, torch.Tensor]
        ``torch.bool`` tensors in PyTorch orientation; insertion order is the layer order.
    kinds : Mapping[str, str], optional
        ``"linear"`` or ``"conv"`` per layer; inferred from the number of dimensions when omitted.
    weights : Mapping[str, torch.Tensor], optional
        Floating-point weights with exactly the masks' keys and shapes, all finite.
    meta : dict, optional
        Free-form JSON-serializable metadata carried through files (e.g. where the masks came from).

    Raises
    ------
    MaskValidationError
        On a non-bool or empty mask, a bad name, a kind that does not fit the shape, or weights
        whose keys, shapes or values do not fit.

    Examples
    --------
    >>> import torch
    >>> ms = MaskSet({"fc.weight": torch.tensor([[True, False], [True, True]])})
    >>> ms.nnz(), ms.density()
    (3, 0.75)
    """

    __slots__ = ("_kinds", "_masks", "_weights", "meta")

    def __init__(
        self,
        masks: Mapping[str, torch.Tensor],
        kinds: Mapping[str, str] | None = None,
        weights: Mapping[str, torch.Tensor] | None = None,
        *,
        meta: dict | None = None,
    ):
        check_layer_mapping(masks, "masks")
        if kinds is not None and not isinstance(kinds, Mapping):
            raise MaskValidationError(
                f"kinds must be a mapping of layer name to 'linear' or 'conv', not a "
                f"{type(kinds).__name__}"
            )
        if meta is not None and not isinstance(meta, Mapping):
            raise MaskValidationError(f"meta must be a dict, not a {type(meta).__name__}")
        if weights is not None:
            check_layer_mapping(weights, "weights")
        kinds = dict(kinds or {})
        unknown = set(kinds) - set(masks)
        if unknown:
            raise MaskValidationError(f"kinds given for layers without masks: {sorted(unknown)}")
        self._masks: dict[str, torch.Tensor] = {}
        self._kinds: dict[str, str] = {}
        for name, mask in masks.items():
            check_name(name)
            self._masks[name], self._kinds[name] = _check_mask(name, mask, kinds.get(name))
        self._weights: dict[str, torch.Tensor] | None = None
        if weights is not None:
            if set(weights) != set(self._masks):
                missing = sorted(set(self._masks) - set(weights))
                extra = sorted(set(weights) - set(self._masks))
                raise MaskValidationError(
                    f"weights do not match masks: missing {missing}, without a mask {extra}"
                )
            self._weights = {n: check_weight(n, weights[n], self._masks[n]) for n in self._masks}
        self.meta: dict = dict(meta or {})

    # -- construction helpers -------------------------------------------------------------
    @classmethod
    def from_tensors(
        cls,
        masks: Mapping[str, Any],
        kinds: Mapping[str, str] | None = None,
        weights: Mapping[str, torch.Tensor] | None = None,
        *,
        meta: dict | None = None,
    ) -> MaskSet:
        """Build from 0/1 tensors or arrays of any dtype; values other than 0 and 1 are an error."""
        check_layer_mapping(masks, "masks")
        conv = {n: check_layer_mask(check_name(n), m) for n, m in masks.items()}
        return cls(conv, kinds, weights, meta=meta)

    @classmethod
    def from_weights(
        cls,
        weights: Mapping[str, torch.Tensor],
        kinds: Mapping[str, str] | None = None,
        *,
        meta: dict | None = None,
    ) -> MaskSet:
        """Masks defined by the nonzero entries of ``weights``; the weights are kept."""
        check_layer_mapping(weights, "weights")
        masks = {}
        for name, w in weights.items():
            check_name(name)
            if not isinstance(w, torch.Tensor) or not w.is_floating_point():
                raise MaskValidationError(f"layer {name!r}: weight is not a floating-point tensor")
            masks[name] = w != 0
        return cls(masks, kinds, weights, meta=meta)

    # -- Mapping protocol -----------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._masks[name]
        except KeyError:
            raise UnknownNameError("layer", name, self._masks) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    # Mapping's own ``__contains__`` and ``get`` catch only KeyError, and ``__getitem__`` raises
    # UnknownNameError (a ValueError), so ``"x" in ms`` would raise instead of returning False.
    def __contains__(self, name: object) -> bool:
        return name in self._masks

    def get(self, name: str, default: Any = None) -> Any:
        return self._masks.get(name, default)

    # -- layer description ----------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Layer names in order."""
        return list(self._masks)

    @property
    def weights(self) -> dict[str, torch.Tensor] | None:
        """Companion weights (same keys as the masks), or None."""
        return None if self._weights is None else dict(self._weights)

    @property
    def has_weights(self) -> bool:
        return self._weights is not None

    def kind(self, name: str) -> str:
        self[name]
        return self._kinds[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self[name].shape)

    def layers(self) -> list[LayerInfo]:
        """One :class:`LayerInfo` per layer, in order."""
        return [LayerInfo(n, self._kinds[n], tuple(m.shape)) for n, m in self._masks.items()]

    @property
    def device(self) -> torch.device:
        """Device of the masks (the first layer's; all layers share it after :meth:`to`)."""
        if not self._masks:
            return torch.device("cpu")
        return next(iter(self._masks.values())).device

    # -- counts ---------------------------------------------------------------------------
    def nnz(self, name: str | None = None) -> int:
        """Number of kept entries of one layer, or of all layers when ``name`` is None."""
        if name is not None:
            return int(torch.count_nonzero(self[name]))
        return sum(int(torch.count_nonzero(m)) for m in self._masks.values())

    def numel(self, name: str | None = None) -> int:
        """Number of entries of one layer, or of all layers when ``name`` is None."""
        if name is not None:
            return self[name].numel()
        return sum(m.numel() for m in self._masks.values())

    def density(self, name: str | None = None) -> float:
        """Kept fraction of one layer, or global (total nnz / total entries) when ``name`` is None."""
        total = self.numel(name)
        return self.nnz(name) / total if total else math.nan

    def densities(self) -> dict[str, float]:
        """Per-layer density, in layer order."""
        return {n: int(torch.count_nonzero(m)) / m.numel() for n, m in self._masks.items()}

    def nnz_per_layer(self) -> dict[str, int]:
        """Per-layer nnz, in layer order."""
        return {n: int(torch.count_nonzero(m)) for n, m in self._masks.items()}

    # -- transformations ------------------------------------------------------------------
    def to(self, device: str | torch.device) -> MaskSet:
        """A copy with masks and weights on ``device``."""
        masks = {n: m.to(device) for n, m in self._masks.items()}
        weights = None
        if self._weights is not None:
            weights = {n: w.to(device) for n, w in self._weights.items()}
        return self._new(masks, weights)

    def cpu(self) -> MaskSet:
        return self.to("cpu")

    def with_weights(self, weights: Mapping[str, torch.Tensor] | None) -> MaskSet:
        """A copy with other companion weights (validated), or none when ``weights`` is None."""
        return MaskSet(self._masks, self._kinds, weights, meta=self.meta)

    def without_weights(self) -> MaskSet:
        return self._new(self._masks, None)

    def select(self, names: Iterable[str]) -> MaskSet:
        """A MaskSet holding only ``names``, in the order given."""
        if isinstance(names, str):  # would select its characters
            raise MaskValidationError(f"select takes a list of layer names, not the string "
                                      f"{names!r}; select([{names!r}])")  # fmt: skip
        names = list(names)
        for n in names:
            self[n]
        masks = {n: self._masks[n] for n in names}
        weights = None if self._weights is None else {n: self._weights[n] for n in names}
        return MaskSet(masks, {n: self._kinds[n] for n in names}, weights, meta=self.meta)

    def _new(self, masks, weights) -> MaskSet:
        out = MaskSet.__new__(MaskSet)
        out._masks, out._kinds, out._weights = masks, dict(self._kinds), weights
        out.meta = dict(self.meta)
        return out

    # -- comparison -----------------------------------------------------------------------
    def equal(self, other: object, *, weights: bool = True) -> bool:
        """Same layer names in the same order, kinds, and masks; weights too if ``weights``.

        Tensors on different devices are compared on the CPU. ``meta`` is not compared.
        """
        if not isinstance(other, MaskSet):
            return False
        if list(self._masks) != list(other._masks) or self._kinds != other._kinds:
            return False
        for n, m in self._masks.items():
            o = other._masks[n]
            if m.shape != o.shape or not torch.equal(m.cpu(), o.cpu()):
                return False
        if weights:
            if (self._weights is None) != (other._weights is None):
                return False
            if self._weights is not None:
                for n, w in self._weights.items():
                    o = other._weights[n]
                    if w.dtype != o.dtype or not torch.equal(w.cpu(), o.cpu()):
                        return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskSet):
            return NotImplemented
        return self.equal(other, weights=True)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        w = ", with weights" if self.has_weights else ""
        if not self._masks:
            return "MaskSet(0 layers)"
        return (
            f"MaskSet({len(self)} layers, nnz {self.nnz():,} of {self.numel():,}, "
            f"density {self.density():.4g}{w})"
        )
