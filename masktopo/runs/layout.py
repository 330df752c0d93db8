"""The names of a run directory's files: the one place that spells them (docs/formats.md).

A run directory is what a masktopo command that produces a sequence of results writes: its
``run.json`` says which command (``kind``) and with which resolved config. Every kind shares the
top of the layout (``run.json``, the ``.lock`` of its writer) and the training kind adds the mask
events::

    run.json                          format, format_version, kind, created, config, layers, ...
    .lock                             the writing process (pid, host) while one writes
    events.jsonl                      one JSON line per mask event          (train, loop)
    masks/event-NNNNNN.safetensors    the event's masks (and kept weights)  (train, loop)
    checkpoint.pt                     the resume point                      (train)
    summary.json                      history and final metrics             (train, loop, pags, ...)
    metrics.jsonl                     the live log: per epoch, and the end  (train)
    tensorboard/                      --tensorboard's event files           (train)
    wandb/                            --wandb's files (wandb.init(dir=RUN)) (train)
    analysis/<key>.npz                the run-analysis cache                (any kind with events)
    base.safetensors, best.safetensors, init.safetensors (the scored network), snapshots/,
    candidates.parquet, state.json, .pags-state/   PAGS's outputs and resume point   (pags)
"""

from __future__ import annotations

#: ``run.json``'s ``format`` and the version this masktopo writes (2 added ``kind``).
RUN_FORMAT = "masktopo.run"
RUN_FORMAT_VERSION = 2
#: Versions this masktopo reads (version 1: training runs without ``kind``).
RUN_FORMAT_VERSIONS = (1, 2)
#: The ``format`` of PAGS's run.json before version 2 (read as ``kind = "pags"``).
LEGACY_PAGS_FORMAT = "masktopo.pags"

RUN_FILE = "run.json"
LOCK_FILE = ".lock"

# -- training runs (and any run with mask events) ------------------------------------------------
EVENTS_FILE = "events.jsonl"
MASKS_DIR = "masks"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
ANALYSIS_DIR = "analysis"
#: The live log of a training run: one JSON line per epoch and one at the end.
METRICS_FILE = "metrics.jsonl"
#: TensorBoard's event files (``masktopo train --tensorboard``).
TENSORBOARD_DIR = "tensorboard"
#: What ``wandb.init(dir=RUN)`` writes (``masktopo train --wandb``).
WANDB_DIR = "wandb"

# -- PAGS runs ------------------------------------------------------------------------------------
BASE_FILE = "base.safetensors"
BEST_FILE = "best.safetensors"
#: The whole state (parameters and buffers) of the network PAGS scored: training from it and
#: ``best.safetensors`` starts from exactly that network (``train --init-masks PAGS_RUN``).
INIT_FILE = "init.safetensors"
SNAPSHOT_DIR = "snapshots"
CANDIDATES_FILE = "candidates.parquet"
STATE_FILE = "state.json"
STATE_DIR = ".pags-state"

# -- prune, search and prune-bench folders ---------------------------------------------------------
#: ``masktopo prune``'s table: one row per method x sparsity (objective, |w - w0|, accuracy, ...).
PRUNE_TABLE_FILE = "results.csv"
#: ``masktopo search`` / ``prune-bench``: one parquet part per finished batch (the commit point),
#: and every row in run order once the search is complete.
RESULTS_DIR = "results"
RESULTS_FILE = "results.parquet"
#: The ``format`` (metadata) of a search's ``masks/part-NNNNNN.safetensors``: the masks,
#: weights and biases of a batch's runs at or above the target, each tensor stacked over runs.
SEARCH_MASKS_FORMAT = "masktopo.search-masks"

#: The kinds of run and the files and folders that make them up (besides run.json and .lock).
KINDS: dict[str, tuple[str, ...]] = {
    "train": (
        EVENTS_FILE,
        MASKS_DIR,
        CHECKPOINT_FILE,
        SUMMARY_FILE,
        ANALYSIS_DIR,
        METRICS_FILE,
        TENSORBOARD_DIR,
        WANDB_DIR,
    ),
    "pags": (
        BASE_FILE,
        BEST_FILE,
        INIT_FILE,
        SNAPSHOT_DIR,
        CANDIDATES_FILE,
        STATE_FILE,
        STATE_DIR,
        SUMMARY_FILE,
    ),
    # recorded from a user's own loop (masktopo.sparsify / masktopo.record): the user's own
    # checkpoint holds the resume point (the sparsifier's state_dict)
    "loop": (EVENTS_FILE, MASKS_DIR, SUMMARY_FILE, ANALYSIS_DIR),
    # masktopo prune: one event per solve (CHITA++: per stage) and the table results.csv
    "prune": (EVENTS_FILE, MASKS_DIR, SUMMARY_FILE, ANALYSIS_DIR, PRUNE_TABLE_FILE),
    # masktopo search / prune-bench: results parts, the masks of runs above target (search)
    "search": (RESULTS_DIR, MASKS_DIR, CHECKPOINT_FILE, RESULTS_FILE, SUMMARY_FILE),
    "prune-bench": (RESULTS_DIR, CHECKPOINT_FILE, RESULTS_FILE, SUMMARY_FILE),
}


def event_file(k: int) -> str:
    """The mask file of event ``k``, relative to the run directory."""
    return f"{MASKS_DIR}/event-{k:06d}.safetensors"


def event_index(name: str) -> int | None:
    """``k`` of an ``event-NNNNNN.safetensors`` file name, else None."""
    stem, _, suffix = name.partition(".")
    if suffix != "safetensors" or not stem.startswith("event-"):
        return None
    digits = stem[len("event-") :]
    return int(digits) if digits.isdigit() else None


def snapshot_file(t: int) -> str:
    """PAGS's snapshot after candidate ``t``, relative to the run directory."""
    return f"{SNAPSHOT_DIR}/snapshot-{t:06d}.safetensors"


def state_best_file(next_t: int) -> str:
    """PAGS's resume copy of the best masks, written before candidate ``next_t`` (state.json
    refers to it until the best changes again), relative to the run."""
    return f"{STATE_DIR}/best-{next_t:06d}.safetensors"


def run_parts() -> frozenset[str]:
    """Every top-level name that belongs to a run directory of some kind."""
    return frozenset({RUN_FILE, LOCK_FILE}.union(*KINDS.values()))
