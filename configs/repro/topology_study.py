"""The topology study (issue 17, pags-spec §3.5, §5): across the final masks of a sweep's runs,
the Spearman rank correlation between each network topology metric of the last mask event and
the final model's test accuracy, over every run and within each value of an axis.

    python configs/repro/topology_study.py SWEEP_DIR [--within method]

Prints a markdown table: metric, rho (all runs), p-value, n, then rho within each group. The
metrics are read through masktopo.sweep.run_table (the runs' analysis caches; computed once).
"""

from __future__ import annotations

import argparse
import math

from scipy.stats import spearmanr

from masktopo.sweep import run_table

METRICS = (
    "R_s",
    "ramanujan_gap",
    "imdb_ramanujan_gap",
    "weighted_spectral_gap",
    "imdb_weighted_gap",
    "full_spectrum_norm",
    "ramanujan_fraction",
)


def rho(df, metric: str) -> tuple[float, float, int]:
    sub = df[["test_acc", metric]].astype(float).dropna()
    if len(sub) < 3 or sub[metric].nunique() < 2:
        return math.nan, math.nan, len(sub)
    r = spearmanr(sub["test_acc"], sub[metric])
    return float(r.statistic), float(r.pvalue), len(sub)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sweep")
    ap.add_argument("--within", default="method", help="an axis to correlate within as well")
    args = ap.parse_args()
    metrics = [m for m in METRICS]
    df = run_table(args.sweep, ["test_acc", *metrics])
    groups = sorted(df[args.within].dropna().unique()) if args.within in df else []
    head = ["metric", "ρ (all)", "p", "n", *[f"ρ ({args.within}={g})" for g in groups]]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for m in metrics:
        r, p, n = rho(df, m)
        cells = [m, f"{r:+.2f}", f"{p:.2g}", str(n)]
        for g in groups:
            rg, _, ng = rho(df[df[args.within] == g], m)
            cells.append(f"{rg:+.2f} (n={ng})")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
