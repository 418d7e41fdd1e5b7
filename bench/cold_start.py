"""Cold import time of each Lambda handler module, relative to `import boto3` measured in the same run.

Each measurement is a fresh interpreter (what a Lambda cold start pays for imports), repeated; the
median is reported. Rounds interleave `import boto3` with every handler, so load from other processes
on a shared machine lands on both sides of the ratio. Target: every handler at most 1.5x `import boto3`.

    python bench/cold_start.py [--repeat 7] [--json] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5

_SNIPPET = """
import sys, time
sys.path[:0] = [{core!r}, {fndir!r}]
t = time.perf_counter()
{stmt}
print((time.perf_counter() - t) * 1000)
"""


def measure_once(stmt: str, fndir: Path | None = None) -> float:
    code = _SNIPPET.format(core=str(ROOT / "layers/core"), fndir=str(fndir or ROOT), stmt=stmt)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "0"},
    )
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args()
    fndirs = sorted(p for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
    for fndir in fndirs:  # warm the bytecode caches first
        measure_once("import app", fndir)
    boto3_runs: list[float] = []
    runs: dict[str, list[float]] = {fndir.name: [] for fndir in fndirs}
    for _ in range(args.repeat):
        boto3_runs.append(measure_once("import boto3"))
        for fndir in fndirs:
            runs[fndir.name].append(measure_once("import app", fndir))
    boto3_ms = statistics.median(boto3_runs)
    rows = []
    for name, samples in runs.items():
        ms = statistics.median(samples)
        rows.append({"function": name, "import_ms": round(ms, 1), "ratio_vs_boto3": round(ms / boto3_ms, 2)})
    worst = max(r["ratio_vs_boto3"] for r in rows)
    result = {
        "python": sys.version.split()[0],
        "repeat": args.repeat,
        "import_boto3_ms": round(boto3_ms, 1),
        "handlers": rows,
        "worst_ratio": worst,
        "target_ratio": TARGET_RATIO,
        "within_target": worst <= TARGET_RATIO,
    }
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"cold import, median of {args.repeat} fresh interpreters (Python {result['python']})")
    print(f"{'import boto3':<28}{boto3_ms:>9.1f} ms   1.00x")
    for r in rows:
        print(f"{r['function']:<28}{r['import_ms']:>9.1f} ms   {r['ratio_vs_boto3']:.2f}x")
    print(
        f"worst ratio {worst:.2f}x (target <= {TARGET_RATIO}x): {'OK' if result['within_target'] else 'OVER'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
