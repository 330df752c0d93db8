"""Where a fresh run's network starts: the model's initialisation from the seed, or a saved state.

``init_weights`` names a safetensors file of the model's whole state (every parameter and
buffer, as ``model.state_dict()`` names them). ``init_masks`` naming a PAGS run directory means
its best masks *and* the network PAGS scored (``init.safetensors``), so that training starts
from exactly the network whose masks were selected, whatever the training seed (pags-spec §4.2
step 3 trains every snapshot "from θ").
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import MaskFileError
from ..runs import run_kind
from ..runs.layout import BEST_FILE, INIT_FILE

__all__ = ["initial_state_file", "load_initial_state", "mask_file"]


def _pags_run(path: str | os.PathLike | None) -> Path | None:
    if path is None:
        return None
    p = Path(os.fspath(path))
    try:
        return p if p.is_dir() and run_kind(p) == "pags" else None
    except MaskFileError:
        return None


def mask_file(path: str | os.PathLike) -> Path:
    """The mask file ``init_masks`` names: a PAGS run directory's ``best.safetensors``, else
    ``path`` itself."""
    run = _pags_run(path)
    return run / BEST_FILE if run is not None else Path(os.fspath(path))


def initial_state_file(cfg) -> Path | None:
    """The state file a fresh run of ``cfg`` starts from: ``init_weights``, else the scored
    network of a PAGS run given as ``init_masks``; None: the seed's initialisation.

    Raises
    ------
    MaskFileError
        A PAGS run without ``init.safetensors`` (written by masktopo before 0.2).
    """
    if cfg.init_weights is not None:
        return Path(os.fspath(cfg.init_weights))
    run = _pags_run(cfg.init_masks)
    if run is None:
        return None
    f = run / INIT_FILE
    if not f.is_file():
        raise MaskFileError(run, f"this PAGS run has no {INIT_FILE} (the network it scored; "
                                 f"written since masktopo 0.2): pass --init-masks "
                                 f"{run / BEST_FILE} to train its masks from the training "
                                 "seed's initialisation")  # fmt: skip
    return f


def load_initial_state(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Copy the state in the safetensors file ``path`` into ``model`` (every parameter and
    buffer; dtypes converted to the model's).

    Raises
    ------
    MaskFileError
        Missing, truncated or not a safetensors file; or the state of another network (names or
        shapes that differ, listed).
    """
    from ..store import read_state_file

    p = Path(os.fspath(path))
    state = read_state_file(p, "initial weights")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
              for k, v in own.items() if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or extra or shapes:
        parts = []
        for what, names in (("missing", missing), ("not in the model", extra),
                            ("other shapes", shapes)):  # fmt: skip
            if names:
                more = f" and {len(names) - 5} more" if len(names) > 5 else ""
                parts.append(f"{what}: {', '.join(names[:5])}{more}")
        raise MaskFileError(p, "initial weights are the state of another network; "
                               + "; ".join(parts))  # fmt: skip
    for name, t in state.items():
        if not torch.isfinite(t).all() and t.is_floating_point():
            raise MaskFileError(p, f"initial weights: {name} has NaN or infinite values")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(dtype=v.dtype))
