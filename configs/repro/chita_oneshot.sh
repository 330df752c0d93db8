#!/usr/bin/env bash
# CHITA one-shot reproduction at small scale (methods-spec §5.7; docs/reproductions.md): MLPNet
# 784-40-20-10 trained dense on Fashion-MNIST, then pruned in one shot by MP, BSO and CHITA
# at 50..98 % sparsity and CHITA++ (8 stages) at 90..98 %, no fine-tuning, gradient
# samples of seeds 0 1 2 (the same 1000 samples for every method of one seed).
# Usage: bash configs/repro/chita_oneshot.sh OUT_DIR [DEVICE]   (prints the mean ± std table)
set -euo pipefail
out=${1:?usage: chita_oneshot.sh OUT_DIR [DEVICE]}
device=${2:-cpu}
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$out/dense/summary.json" ]; then
  masktopo train --method dense --density 1 --model mlpnet --dataset fashion-mnist --epochs 10 \
    --seed 0 --device "$device" --out "$out/dense"
fi
for seed in 0 1 2; do
  [ -f "$out/prune-s$seed/results.csv" ] || masktopo prune "$out/dense" \
    --config "$here/chita_oneshot.toml" --seed "$seed" --device "$device" --out "$out/prune-s$seed"
done
for seed in 0 1 2; do
  [ -f "$out/prunepp-s$seed/results.csv" ] || masktopo prune "$out/dense" \
    --config "$here/chita_plusplus.toml" --seed "$seed" --device "$device" \
    --out "$out/prunepp-s$seed"
done
python - "$out" <<'PY'
import csv, statistics, sys, json
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for f in sorted(out.glob("prune*-s*/results.csv")):
    for r in csv.DictReader(f.open()):
        rows.setdefault((float(r["sparsity"]), r["method"]), []).append(float(r["test_acc"]) * 100)
dense = json.loads((out / "dense" / "summary.json").read_text())["final"]["test_acc"] * 100
methods = ["mp", "bso", "chita", "chita++"]
print(f"dense test accuracy {dense:.2f} %; seeds of each cell in brackets")
print("| sparsity | " + " | ".join(methods) + " |")
print("| --- |" + " --- |" * len(methods))
for s in sorted({s for s, _ in rows}):
    cells = []
    for m in methods:
        v = rows.get((s, m), [])
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        cells.append(f"{statistics.mean(v):.2f} ± {sd:.2f} [{len(v)}]" if v else "")
    print(f"| {s:g} | " + " | ".join(cells) + " |")
PY
