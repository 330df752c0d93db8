#!/usr/bin/env bash
# Phase 2 of 2-3-3-3-1 in full (all 25,992 supports) at one setting: lr 0.1, cosine, 50 epochs,
# seed 0, init width 16 -- the setting of search_study.sh's 620-support sample, so the two can
# be compared. On the CPU the ensemble takes its compiled route (route=auto).
# Results: docs/reproductions.md (E5). Usage: bash configs/repro/search_full.sh OUT_DIR [LR]
# (LR 0.1 by default, into OUT_DIR/p2; another LR, e.g. 0.05, the best setting of the
# 6-setting sample, into OUT_DIR/p2-lrLR), then python configs/repro/search_summarize.py OUT_DIR
set -euo pipefail
out=${1:?usage: search_full.sh OUT_DIR [LR]}
lr=${2:-0.1}
name=p2; [ "$lr" = 0.1 ] || name="p2-lr$lr"
resume=(); [ -f "$out/$name/run.json" ] && resume=(--resume)
masktopo search --arch 2-3-3-3-1 --lr "$lr" --schedule cosine --epochs 50 --seed 0 \
  --models-per-batch 4096 --checkpoint-every 5 --target 0.95 --out "$out/$name" "${resume[@]}"
