"""Seeds derived from a run seed and a purpose: every random stream of a run has its own.

A stream is named by its purpose (``"model"``, ``"masks"``, ``("data-order", epoch)``, ...), so
adding a stream never shifts another one, and a resumed run recreates each stream from its name.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

__all__ = ["generator", "seed_for"]


def seed_for(seed: int, *parts: Any) -> int:
    """A 63-bit seed derived from ``seed`` and a purpose (stable across runs and platforms):
    the first 8 bytes of SHA-256 of ``"seed:part:part..."``, little-endian, shifted right by 1."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def generator(seed: int, *parts: Any, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded by :func:`seed_for` ``(seed, *parts)``."""
    return torch.Generator(device=device).manual_seed(seed_for(seed, *parts))
