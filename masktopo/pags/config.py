"""The resolved configuration of a PAGS run: one frozen dataclass, saved into run.json.

Every option is declared once, here, with :func:`masktopo.options.option` (help, bounds, known
names); the ``masktopo pags`` flags, ``--config FILE.toml``, ``--print-config`` and run.json's
``config`` are derived from these declarations, and every string option is checked here and
nowhere else: a bad value raises :class:`~masktopo.errors.UnknownNameError` (listing the known
values) or :class:`~masktopo.errors.MaskValidationError`, naming the flag or file it came from.
Names of models, datasets and PaI methods are checked against their registries by
:mod:`masktopo.pags.runner`. Light: no torch is imported (``masktopo pags --help``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..options import (
    INVALID,
    Options,
    SetupOptions,
    check_value,
    fields,
    option,
    same_as,
    to_dict,
)

#: Candidate samplers (pags-spec A3).
SAMPLERS = ("rescore", "rewire")
#: Selection rules (pags-spec A7).
SELECTIONS = ("layerwise", "global")
#: Where the full-spectrum distance is measured from (pags-spec A5).
REFERENCES = ("origin", "base")
#: Configuration fields that may change between a run and its ``--resume``.
RESUMABLE_CHANGES = ("n", "chunk", "exact", "estimates", "device", "route", "data_dir")


@dataclass(frozen=True)
class PagsConfig:
    """Parameters of one PAGS run (defaults: author-faithful, pags-spec §4.6).

    Each field's meaning and bounds are declared with it (``masktopo pags --help`` and
    ``--print-config`` show them). ``model`` and ``dataset`` may be None when the engine is
    driven directly from Python; ``conv``, ``gate`` and ``imdb`` are the graph options the
    candidates are scored with (:class:`masktopo.options.Options`).
    """

    model: str | None = same_as(SetupOptions, "model", default_text="required")
    dataset: str | None = same_as(SetupOptions, "dataset", default_text="required")
    width: int | None = same_as(SetupOptions, "width")
    method: str = option("erk", "PaI method the candidates come from; see --list-methods",
                         metavar="NAME")  # fmt: skip
    density: float = same_as(SetupOptions, "density", default_text="required")
    n: int = option(1000, "number of candidate masks to sample; under torchrun spell it "
                    "--candidates (torchrun reads --n as an abbreviation of its own options)",
                    ge=1, aliases=("--candidates",), metavar="N")  # fmt: skip
    iters: int = option(20, "minibatches per candidate's PaI scoring, rescore sampler", ge=1,
                        metavar="I")  # fmt: skip
    batch_size: int = option(128, "minibatch size for the PaI scoring", ge=1, metavar="B")
    score_batches: int | None = same_as(SetupOptions, "score_batches",
                                        help="minibatches (of batch_size) the base mask is "
                                        "scored on (data-driven methods; candidates use iters)",
                                        default_text="the whole training set, as the author "
                                        "code's vanilla ticket")  # fmt: skip
    pai_rounds: int | None = same_as(SetupOptions, "pai_rounds",
                                     help="pruning rounds of an iterative PaI method (synflow, "
                                     "iter-snip, force) for the base and every candidate",
                                     default_text="10, the PAGS author loop's (pags-spec "
                                     "§4.2); masktopo.pai's own: synflow 100")  # fmt: skip
    snapshot_every: int = option(20, "save snapshots/snapshot-T.safetensors every K candidates "
                                 "when the best changed (snapshot 0 is the base)", ge=1,
                                 metavar="K")  # fmt: skip
    sampler: str = option("rescore", "rescore: re-run the PaI method on fresh minibatches (noisy "
                          "weights for data-free methods; author code); rewire: random "
                          "re-wiring at the base's per-layer counts", choices=SAMPLERS,
                          what="sampler")  # fmt: skip
    selection: str = option("layerwise", "layerwise: per-layer Pareto acceptance on (IMDB "
                            "Ramanujan gap, full-spectrum norm); global: keep the whole "
                            "candidate with the largest mean full-spectrum norm",
                            choices=SELECTIONS, what="selection")  # fmt: skip
    repair: bool = option(False, "bring each candidate back to the base's per-layer counts "
                          "(top-|w|) before scoring, so layer-wise mixing keeps the density "
                          "exact")  # fmt: skip
    seed: int = same_as(SetupOptions, "seed")
    chunk: int = option(32, "candidates generated and scored per batch (speed only)", ge=1,
                        metavar="C")  # fmt: skip
    exact: bool = option(False, "score every candidate layer exactly (the all-exact path); by "
                         "default every candidate is ranked with a few Lanczos steps and only "
                         "the layers whose rigorous upper bounds can still beat the best are "
                         "computed exactly: the same selection, faster")  # fmt: skip
    estimates: bool = option(False, "also estimate every candidate's full-spectrum distances "
                             "and network score in the ranking pass, for candidates.parquet "
                             "and the plot's dots (about twice the ranking's cost; the same "
                             "selection); without it a candidate's row holds its IMDB "
                             "estimates, and fs values only for the layers accepted from "
                             "it")  # fmt: skip
    invalid: str = option("zero", "layers failing the Ramanujan gate count as 0 (N23) or are "
                          "skipped (I23)", choices=INVALID, what="invalid-value rule")  # fmt: skip
    reference: str = option("origin", "full-spectrum distance from the origin (author code) or "
                            "from the base mask's coordinate", choices=REFERENCES,
                            what="distance reference")  # fmt: skip
    conv: str = same_as(Options, "conv", flag=False)
    gate: str = same_as(Options, "gate", flag=False)
    imdb: str = same_as(Options, "imdb", flag=False)
    device: Literal["cpu", "cuda"] = option("cpu", "where PaI scoring and the spectra run",
                                            what="device")  # fmt: skip
    route: Literal["auto", "batched"] = option(
        "auto", "how the spectra are solved: auto (the compiled CPU engine; on CUDA the batched "
        "Gram route for layers with a side of 2048 or more) or batched (the CUDA code path for "
        "every layer, on any device)", what="route",
        flag=False)  # fmt: skip
    data_dir: str | None = same_as(SetupOptions, "data_dir")
    warm_start: str | None = option(None, "score on the weights of this checkpoint of --model "
                                    "instead of the initialization, e.g. warm/checkpoint.pt of "
                                    "'masktopo train --method dense --density 1 --max-steps "
                                    "500 --out warm'", metavar="CKPT")  # fmt: skip

    def __post_init__(self):
        for f in fields(PagsConfig):
            value = check_value(PagsConfig, f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # an int given for a float becomes a float

    def options(self) -> Options:
        """The analysis options candidates are scored with."""
        return Options(self.conv, self.gate, self.imdb, "directed", allow_empty=True)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PagsConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> PagsConfig:
        return dataclasses.replace(self, **changes)
