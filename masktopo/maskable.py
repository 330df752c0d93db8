"""Which weights of a model a mask covers: found by module type, overridable by name patterns.

The rule (methods-spec §1.1, extended to transformer models):

- the ``weight`` of every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d`` (attention's
  output projection ``out_proj`` is an ``nn.Linear``), and of Hugging Face's GPT-2 style
  ``Conv1D`` (a linear projection stored as ``(in, out)``, found by its class name so that
  ``transformers`` is not imported);
- the packed ``in_proj_weight`` (or ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``) of
  ``nn.MultiheadAttention``;
- never embeddings (a Linear whose weight is tied to an ``nn.Embedding``, such as a language
  model's head, is left out too), norms, biases or any other parameter.

``layers=`` glob patterns replace the rule (every parameter of two or more dimensions whose
name matches one pattern); ``exclude=`` patterns remove names from either set. The zoo's models
hold only Linear and Conv layers, so :func:`masktopo.zoo.maskable_parameters` gives the same set.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

from .errors import MaskValidationError

__all__ = [
    "MASKABLE_TYPES",
    "find_maskable",
    "transposed_layers",
    "type_rule_attrs",
    "unwrap_model",
]

#: Module types whose ``weight`` is maskable.
MASKABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def _is_hf_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module that owns the parameters: ``DistributedDataParallel(m).module`` and
    ``torch.compile(m)._orig_mod`` give ``m`` (nested wrappers too)."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            break
    return model


def _patterns(value, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    out = tuple(value)
    if not out or not all(isinstance(p, str) and p for p in out):
        raise MaskValidationError(f"{what} must be glob patterns (strings), got {value!r}")
    return out


def type_rule_attrs(module: nn.Module) -> tuple[str, ...]:
    """The attributes of ``module`` that the type rule masks (module docstring): ``("weight",)``
    for Linear, Conv and Hugging Face ``Conv1D``, the present projection weights of
    ``nn.MultiheadAttention``, else none. :func:`find_maskable` and :func:`masktopo.record`
    both select by it."""
    if isinstance(module, MASKABLE_TYPES) or _is_hf_conv1d(module):
        return ("weight",)
    if isinstance(module, nn.MultiheadAttention):
        return tuple(a for a in _ATTENTION_WEIGHTS if getattr(module, a, None) is not None)
    return ()


def _by_type(model: nn.Module) -> set[int]:
    embedded = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)
    }
    found: set[int] = set()
    for m in model.modules():
        for attr in type_rule_attrs(m):
            w = getattr(m, attr, None)
            if isinstance(w, nn.Parameter) and id(w) not in embedded:
                found.add(id(w))
    return found


def find_maskable(
    model: nn.Module,
    *,
    layers: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    first_dense: bool = False,
    last_dense: bool = False,
) -> dict[str, nn.Parameter]:
    """The parameters a mask covers, in ``named_parameters()`` order (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The model (DDP and ``torch.compile`` wrappers are looked through).
    layers : str or iterable of str, optional
        Glob patterns (``fnmatch``, e.g. ``"encoder.*.attn.*"``): the maskable set is every
        parameter of two or more dimensions whose name matches one of them, instead of the
        type rule.
    exclude : str or iterable of str, optional
        Glob patterns of names to leave dense.
    first_dense, last_dense : bool, optional
        Leave out the first or last parameter of the set (the stem, the classifier).

    Returns
    -------
    dict[str, torch.nn.Parameter]
        Name -> the parameter itself. Empty when nothing matches.

    Raises
    ------
    MaskValidationError
        Patterns that are not strings.
    """
    model = unwrap_model(model)
    include = _patterns(layers, "layers")
    leave = _patterns(exclude, "exclude")
    if include:
        found = [(n, p) for n, p in model.named_parameters()
                 if p.dim() >= 2 and any(fnmatch.fnmatchcase(n, pat) for pat in include)]  # fmt: skip
    else:
        ids = _by_type(model)
        found = [(n, p) for n, p in model.named_parameters() if id(p) in ids]
    if leave:
        found = [(n, p) for n, p in found if not any(fnmatch.fnmatchcase(n, pat) for pat in leave)]
    if found and last_dense:
        found = found[:-1]
    if found and first_dense:
        found = found[1:]
    return dict(found)


def transposed_layers(model: nn.Module) -> set[str]:
    """Names of the maskable weights stored as ``(in, out)`` (Hugging Face's ``Conv1D``)."""
    model = unwrap_model(model)
    ids = {id(m.weight) for m in model.modules() if _is_hf_conv1d(m)}
    return {n for n, p in model.named_parameters() if id(p) in ids}
