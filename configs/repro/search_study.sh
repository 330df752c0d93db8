#!/usr/bin/env bash
# methods-spec §7 at small scale ("Sparsest Models Elude Pruning"): phase 2 of 2-3-3-3-1 at one
# setting (lr 0.1, cosine, 50 epochs), a sample of at most PER_NNZ supports per weight nnz
# (default 48: 620 supports; 0 = all 25,992); the pruning benchmark at widths 3 and 16 over the
# K grid with 3 seeds (lr 0.1, cosine); then two smaller searches on a 16-per-nnz sample: all 6
# settings (lr 0.05/0.1 x cosine/step/constant), and lr 0.1 cosine with the width-3 init; then
# the fixed-init comparison (claim 4): the search and pruning at width 3 from the same shared
# width-16 initialisation (seed 0), lr 0.05 and 0.1, cosine.
# Results: docs/reproductions.md.
# Usage: bash configs/repro/search_study.sh OUT_DIR [PER_NNZ]. Then:
#   python configs/repro/search_summarize.py OUT_DIR
# Tiny matrices gain nothing from threads: one thread per process (two processes at once).
set -euo pipefail
out=${1:?usage: search_study.sh OUT_DIR [PER_NNZ]}
per_nnz=${2:-48}
sample=(); [ "$per_nnz" != 0 ] && sample=(--per-nnz "$per_nnz")
export OMP_NUM_THREADS=1
resume=(); [ -f "$out/p2/run.json" ] && resume=(--resume)
masktopo search --arch 2-3-3-3-1 --lr 0.1 --schedule cosine --epochs 50 --sparsest-first \
  "${sample[@]}" --models-per-batch 320 --checkpoint-every 5 --target 0.95 --seed 0 \
  --out "$out/p2" "${resume[@]}" &
bench=(); [ -f "$out/prune/run.json" ] && bench=(--resume)
masktopo prune-bench --methods gmp,lth,snip,grasp,synflow,iter-snip,force,rigl \
  --nnz 15-26,30,33,37,40,44,50,53,55,57,60,65 --widths 3,16 --seeds 3 --lr 0.1 \
  --schedule cosine --epochs 50 --target 0.95 --out "$out/prune" "${bench[@]}" &
wait
for name in p2-6settings p2-init3; do
  again=(); [ -f "$out/$name/run.json" ] && again=(--resume)
  if [ "$name" = p2-6settings ]; then
    opts=(--lr 0.05,0.1 --schedule cosine,step,constant --models-per-batch 660)
  else
    opts=(--lr 0.1 --schedule cosine --init-width 3 --models-per-batch 256)
  fi
  masktopo search --arch 2-3-3-3-1 "${opts[@]}" --epochs 50 --per-nnz 16 --sparsest-first \
    --checkpoint-every 5 --target 0.95 --seed 0 --out "$out/$name" "${again[@]}" &
done
wait
fixed=(); [ -f "$out/p2-fixed/run.json" ] && fixed=(--resume)
masktopo search --arch 2-3-3-3-1 --fixed-init --lr 0.05,0.1 --schedule cosine --epochs 50 \
  --per-nnz 16 --sparsest-first --models-per-batch 438 --checkpoint-every 5 --target 0.95 \
  --seed 0 --out "$out/p2-fixed" "${fixed[@]}" &
pfixed=(); [ -f "$out/prune-fixed/run.json" ] && pfixed=(--resume)
masktopo prune-bench --fixed-init --methods gmp,lth,snip,grasp,synflow,iter-snip,force,rigl \
  --nnz 15-26 --widths 3 --seeds 1 --seed 0 --lr 0.05,0.1 --schedule cosine --epochs 50 \
  --target 0.95 --out "$out/prune-fixed" "${pfixed[@]}" &
wait
