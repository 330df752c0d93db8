"""Summarize configs/repro/search_study.sh's outputs as Markdown (docs/reproductions.md).

Usage: python configs/repro/search_summarize.py OUT_DIR [--target 0.95]

Prints: the search's best accuracy per weight nnz and the smallest weight / model nnz at or
above the target; per pruning method and width, the smallest measured weight nnz whose best
run (over seeds) reaches the target, the best accuracy at each K, and the mean number of
ineffective weights (kept weights on no input→output path) in pruned vs searched masks.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from masktopo.search import read_results
from masktopo.search.prune import read_bench


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--target", type=float, default=0.95)
    args = p.parse_args()
    out, target = Path(args.out), args.target
    print(f"load average: {os.getloadavg()}\n")
    names = ["p2", "p2-init3", "p2-6settings", "p2-fixed"]
    names += sorted(p.name for p in out.glob("p2-lr*") if p.is_dir())  # search_full.sh OUT LR
    for name in names:
        if (out / name).is_dir():
            _search(out / name, target)
    for name in ("prune", "prune-no-xavier", "prune-fixed"):
        if (out / name).is_dir():
            _bench(out / name, target)


def _search(path: Path, target: float) -> None:
    df = read_results(path)
    print(f"## Search {path.name}, phase 2 of 2-3-3-3-1: {len(df)} runs\n")
    if len(df):
        g = df.groupby("weight_nnz")
        print("| weight nnz | model nnz | runs | best accuracy | above target |")
        print("|---:|---:|---:|---:|---:|")
        for nnz, rows in g:
            print(f"| {nnz} | {nnz + 10} | {len(rows)} | {rows['accuracy'].max():.4f} | "
                  f"{int((rows['accuracy'] >= target).sum())} |")  # fmt: skip
        hit = df[df["accuracy"] >= target]
        ineff = (df["weight_nnz"] - df["effective_nnz"]).mean()
        if len(hit):
            best = hit.sort_values(["weight_nnz", "accuracy"], ascending=[True, False]).iloc[0]
            print(f"\nsmallest weight nnz at >= {target:g}: {best['weight_nnz']} (model nnz "
                  f"{best['model_nnz']}, {best['key']}, accuracy {best['accuracy']:.4f})")  # fmt: skip
        else:
            print(f"\nno run reached {target:g}")
        print(f"mean ineffective weights of searched masks: {ineff:.2f}\n")


def _bench(path: Path, target: float) -> None:
    df = read_bench(path)
    print(f"## Pruning benchmark {path.name}: {len(df)} runs\n")
    if len(df):
        print("| method | width | runs | smallest weight nnz >= target | best acc at min K "
              "| mean ineffective | mean dead units |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for (m, w), rows in df.groupby(["method", "width"]):
            best = rows.groupby("weight_nnz")["accuracy"].max()
            hit = best[best >= target]
            smallest = int(hit.index.min()) if len(hit) else "none"
            ineff = (rows["weight_nnz"] - rows["effective_nnz"]).mean()
            print(f"| {m} | {w} | {len(rows)} | {smallest} | {best.iloc[0]:.4f} | "
                  f"{ineff:.2f} | {rows['dead_units'].mean():.2f} |")  # fmt: skip
        print("\nbest accuracy over seeds, per K (columns) and method/width (rows):\n")
        piv = df.pivot_table(index=["method", "width"], columns="k", values="accuracy",
                             aggfunc="max")  # fmt: skip
        print("| method | width | " + " | ".join(str(k) for k in piv.columns) + " |")
        print("|---|---:|" + "---:|" * len(piv.columns))
        for (m, w), vals in piv.iterrows():
            cells = " | ".join("" if v != v else f"{v:.3f}" for v in vals)
            print(f"| {m} | {w} | {cells} |")


if __name__ == "__main__":
    main()
