"""E6's layer-collapse read-out: for every run of a sweep of static PaI masks, the layers whose
mask keeps no weight (a collapsed layer cuts every input-output path: chance accuracy) and
whether any input reaches any output through kept weights at all.

    python configs/repro/e6_collapse.py SWEEP_DIR

Prints a markdown table per (init_method, density, shuffle_masks): runs, runs with a collapsed
layer, runs with no input-output path, mean test accuracy.
"""

from __future__ import annotations

import statistics
import sys

import torch

import masktopo
from masktopo.sweep import read_sweep


def connected(ms) -> bool:
    """Some input reaches some output through the kept weights of the MLP's layers in order."""
    reach = None
    for name in ms.names:
        m = ms[name].reshape(ms[name].shape[0], -1).bool()  # (out, in)
        reach = m.any(dim=0) if reach is None else reach
        reach = (m[:, reach]).any(dim=1)
    return bool(reach.any())


def main() -> None:
    state = read_sweep(sys.argv[1])
    groups: dict[tuple, list[tuple[int, bool, float]]] = {}
    for cell in state.cells:
        if state.state(cell) != "done" or "init_method" not in cell.settings:
            continue
        run = state.run_dir(cell)
        ms = masktopo.load(run, event=0)
        empty = sum(int(torch.count_nonzero(ms[n]) == 0) for n in ms.names)
        acc = masktopo.runs.read_run(run).summary()["final"]["test_acc"]
        key = (cell.settings["init_method"], cell.settings["density"],
               cell.settings.get("shuffle_masks", False))  # fmt: skip
        groups.setdefault(key, []).append((empty, connected(ms), acc))
    print(
        "| method | density | shuffled | runs | with a collapsed layer | no input-output path "
        "| test acc (%) |"
    )
    print("|---|---:|---|---:|---:|---:|---|")
    for (m, d, sh), rows in groups.items():
        accs = [100 * a for _, _, a in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        print(
            f"| {m} | {d:g} | {'yes' if sh else 'no'} | {len(rows)} | "
            f"{sum(e > 0 for e, _, _ in rows)} | {sum(not c for _, c, _ in rows)} | "
            f"{statistics.fmean(accs):.2f} ± {sd:.2f} |"
        )


if __name__ == "__main__":
    main()
