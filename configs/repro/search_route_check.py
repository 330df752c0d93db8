"""How fragile single pruning runs on the Cubist Spiral are (docs/reproductions.md, E5).

Trains the same GMP (width 3, K = 25 and 23) and LTH (width 16, K = 25 and 53) runs, seeds
0, 1, 2, once on the ensemble's compiled CPU route and once on its torch route: the same seeds,
data order and initialisation; only the rounding order of the minibatch sums differs. Prints the
final train accuracy of each run per route.

Usage: python configs/repro/search_route_check.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import numpy as np
import torch

from masktopo.search import ensemble, prune_to_k
from masktopo.zoo import cubist_spiral


def main() -> None:
    x, y = cubist_spiral()
    torch.set_num_threads(1)
    original = ensemble.EnsembleTrainer.__init__
    try:
        for route in ("compiled", "torch"):

            def init(self, *args, _route=route, **kwargs):
                kwargs["route"] = _route
                original(self, *args, **kwargs)

            ensemble.EnsembleTrainer.__init__ = init
            seeds = [0, 1, 2] * 2
            gmp = prune_to_k("gmp", 3, [25] * 3 + [23] * 3, seeds, epochs=50, x=x, y=y)
            lth = prune_to_k("lth", 16, [25] * 3 + [53] * 3, seeds, epochs=50, x=x, y=y)
            for name, tr in (("gmp w3 K 25,23", gmp), ("lth w16 K 25,53", lth)):
                print(f"{route:>8} {name}: {np.round(tr.evaluate().accuracy.numpy(), 4)}")
    finally:
        ensemble.EnsembleTrainer.__init__ = original


if __name__ == "__main__":
    main()
