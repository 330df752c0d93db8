"""The resolved configuration of a PAGS run: one frozen dataclass, saved into run.json.

Every string option is parsed here and nowhere else; a bad value raises
:class:`~masktopo.errors.UnknownNameError` (listing the known values) or
:class:`~masktopo.errors.MaskValidationError`. Names of models, datasets and PaI methods are
checked against their registries by :mod:`masktopo.pags.runner`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..analysis.metrics import Options
from ..errors import MaskValidationError, UnknownNameError
from .sampling import SAMPLERS
from .scoring import INVALID

#: Selection rules (pags-spec A7).
SELECTIONS = ("layerwise", "global")
#: Where the full-spectrum distance is measured from (pags-spec A5).
REFERENCES = ("origin", "base")
#: Configuration fields that may change between a run and its ``--resume``.
RESUMABLE_CHANGES = ("n", "chunk", "device", "data_dir")


@dataclass(frozen=True)
class PagsConfig:
    """Parameters of one PAGS run (defaults: author-faithful, pags-spec §4.6).

    Attributes
    ----------
    model, dataset, method : str
        Zoo model, dataset and PaI method names (``model``/``dataset`` may be None when the
        engine is driven directly from Python).
    density : float
        Target global density in (0, 1].
    n : int
        Number of candidates (pags-spec A4), default 1000.
    iters, batch_size : int
        Minibatches per candidate's PaI scoring and their size (rescore sampler), 20 and 128.
    snapshot_every : int
        Save a snapshot every this many candidates when the best changed.
    sampler : {"rescore", "rewire"}
        Candidate sampler (A3).
    selection : {"layerwise", "global"}
        Per-layer Pareto acceptance on (IMDB_Δr, fs) or whole-mask argmax of the network score
        (A7).
    repair : bool
        Bring each candidate back to the base mask's per-layer counts before scoring (A11).
    seed : int
        Run seed: candidate ``t`` uses generators seeded by ``(seed, t)``.
    chunk : int
        Candidates generated and scored per batch (no effect on the result).
    invalid : {"zero", "skip"}
        Undefined layer values count as 0 (N23) or are skipped (I23) (A9).
    reference : {"origin", "base"}
        Full-spectrum distance from the origin (author code) or from the base mask's coordinate
        (A5).
    conv, gate, imdb : str
        Graph options of the analysis (:class:`masktopo.analysis.metrics.Options`).
    device : str
        ``"cpu"`` or ``"cuda"``: where the spectra (and PaI scoring) run.
    data_dir, warm_start : str, optional
        Dataset directory and a warm-start checkpoint (weights θ after a few dense steps).
    """

    model: str | None = None
    dataset: str | None = None
    method: str = "erk"
    density: float = 0.05
    n: int = 1000
    iters: int = 20
    batch_size: int = 128
    snapshot_every: int = 20
    sampler: str = "rescore"
    selection: str = "layerwise"
    repair: bool = False
    seed: int = 0
    chunk: int = 32
    invalid: str = "zero"
    reference: str = "origin"
    conv: str = "unrolled"
    gate: str = "n23"
    imdb: str = "n23"
    device: str = "cpu"
    data_dir: str | None = None
    warm_start: str | None = None

    def __post_init__(self):
        d = self.density
        if not isinstance(d, int | float) or not math.isfinite(d) or not 0 < d <= 1:
            raise MaskValidationError(f"density must be in (0, 1], got {d!r}")
        for name in ("n", "iters", "batch_size", "snapshot_every", "chunk"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise MaskValidationError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise MaskValidationError(f"seed must be an integer >= 0, got {self.seed!r}")
        for value, known, what in (
            (self.sampler, SAMPLERS, "sampler"),
            (self.selection, SELECTIONS, "selection"),
            (self.invalid, INVALID, "invalid-value rule"),
            (self.reference, REFERENCES, "distance reference"),
            (self.device, ("cpu", "cuda"), "device"),
        ):
            if value not in known:
                raise UnknownNameError(what, value, known)
        self.options()  # validates conv / gate / imdb

    def options(self) -> Options:
        """The analysis options candidates are scored with."""
        return Options(self.conv, self.gate, self.imdb, "directed", allow_empty=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PagsConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> PagsConfig:
        return dataclasses.replace(self, **changes)
