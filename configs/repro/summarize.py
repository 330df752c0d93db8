"""Mean ± std (sample std, n - 1) of the final test accuracy per method of a reproduction folder
whose runs are named METHOD-sSEED (configs/repro/*.sh); prints a markdown table."""

import statistics
import sys
from pathlib import Path

from masktopo import runs

rows: dict[str, list[tuple[float, float]]] = {}
for run_dir in sorted(Path(sys.argv[1]).iterdir()):
    if not (run_dir / "summary.json").exists():
        continue
    s = runs.read_run(run_dir).summary()
    method = run_dir.name.rsplit("-s", 1)[0]
    rows.setdefault(method, []).append((s["final"]["test_acc"], s["density"]))
print("| method | n | test accuracy (mean ± std) | final density |")
print("|---|---|---|---|")
for method, vals in rows.items():
    acc = [100 * a for a, _ in vals]
    sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
    print(f"| {method} | {len(acc)} | {statistics.mean(acc):.2f} ± {sd:.2f} | {vals[0][1]:.4f} |")
