#!/usr/bin/env bash
# methods-spec §8 E3 at small scale: C-GaP vs GMP vs RigL at 95% sparsity on Fashion-MNIST
# (LeNet-300-100), 28 epochs each, seeds 0 1 2. Results: docs/reproductions.md.
# Usage: bash configs/repro/e3_gap.sh OUT_DIR   (then: python configs/repro/summarize.py OUT_DIR)
set -euo pipefail
out=${1:?usage: e3_gap.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
for seed in 0 1 2; do
  masktopo train --config "$here/../gap_fmnist_lenet300.toml" --seed "$seed" --device cpu --out "$out/cgap-s$seed"
  masktopo train --config "$here/e3_gmp_lenet300.toml" --seed "$seed" --device cpu --out "$out/gmp-s$seed"
  masktopo train --config "$here/e3_rigl_lenet300.toml" --seed "$seed" --device cpu --out "$out/rigl-s$seed"
done
# supplementary cell: C-GaP with ERK layer densities (the baselines' RigL uses ERK, GMP is global)
for seed in 0 1 2; do
  masktopo train --config "$here/../gap_fmnist_lenet300.toml" --set distribution=erk --seed "$seed" --device cpu --out "$out/cgap-erk-s$seed"
done
