#!/usr/bin/env bash
# The pruning half of configs/repro/search_study.sh (methods-spec §7.4, "Sparsest Models Elude
# Pruning"), alone: the benchmark at widths 3 and 16 over the K grid with 3 seeds (lr 0.1,
# cosine, 50 epochs), SNIP and GraSP from the reference's Xavier-normal re-initialisation (the
# default); the same two methods without it (--no-xavier-reinit: what this repository did
# before 2026-12-02's fifth session); and the fixed-init comparison at width 3 (claim 4).
# Results: docs/reproductions.md (E5).
# Usage: bash configs/repro/prune_bench.sh OUT_DIR [SEEDS] (seeds of the first two parts,
# default 3; the tables of docs/reproductions.md use 3, and 10 for the ten-seed table). Then:
#   python configs/repro/search_summarize.py OUT_DIR
set -euo pipefail
out=${1:?usage: prune_bench.sh OUT_DIR [SEEDS]}
seeds=${2:-3}
export OMP_NUM_THREADS=1
grid=(--nnz 15-26,30,33,37,40,44,50,53,55,57,60,65 --widths 3,16 --seeds "$seeds" --lr 0.1
      --schedule cosine --epochs 50 --target 0.95)
again() { [ -f "$1/run.json" ] && echo --resume || true; }
masktopo prune-bench --methods gmp,lth,snip,grasp,synflow,iter-snip,force,rigl "${grid[@]}" \
  --out "$out/prune" $(again "$out/prune") &
masktopo prune-bench --methods snip,grasp --no-xavier-reinit "${grid[@]}" \
  --out "$out/prune-no-xavier" $(again "$out/prune-no-xavier") &
wait
masktopo prune-bench --fixed-init --methods gmp,lth,snip,grasp,synflow,iter-snip,force,rigl \
  --nnz 15-26 --widths 3 --seeds 1 --seed 0 --lr 0.05,0.1 --schedule cosine --epochs 50 \
  --target 0.95 --out "$out/prune-fixed" $(again "$out/prune-fixed")
