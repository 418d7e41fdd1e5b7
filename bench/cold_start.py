"""Cold import time of each Lambda handler module, relative to `import boto3` measured in the same run.

Each measurement is a fresh interpreter (what a Lambda cold start pays for imports), repeated; the
median is reported. Every handler's import is paired with an `import boto3` measured just before it, and
its ratio is the median of those paired ratios, so load from other processes on a shared machine lands
on both sides of each ratio. Target: every handler at most 1.5x `import boto3`.

Each round runs its imports at another Python stack depth (0 to ~130 extra frames, the same for a pair):
CPython 3.12 allocates its frame stack in chunks, and recursion that keeps crossing a chunk boundary
(the regex parser compiling urllib3's and botocore's patterns at import) costs up to ~40 ms more at
some depths than at others (python/cpython#142183, fixed in 3.13+). Lambda's runtime imports a handler
from a depth of its own, so no single depth is "the" cold start: the median over depths is reported.

The ratio is of wall time, what a cold start waits. The CPU time of the same imports is reported too:
on a loaded machine it counts only the import's own work, not the time spent waiting for a core.

Reference rows, measured the same way, tell how much of a handler's time is its own: boto3 with pydantic;
boto3 with calbot.models (pydantic, every model, the settings model); and the core floor, what every
API handler imports whatever it does (calbot.http, calbot.models, calbot.store: all of that plus
Powertools' Logger and tenacity).

With `--baseline REV` the handlers of that git revision (its layers/ and functions/, exported to a
temporary directory) are measured in the same rounds, so a change's effect is read off one run.

    python bench/cold_start.py [--repeat 7] [--baseline REV] [--json] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5
FLOOR = "(core floor)"
FLOOR_STMT = "import calbot.http, calbot.models, calbot.store"
REFERENCES = {
    "(boto3 + pydantic)": "import boto3, pydantic.main",
    "(boto3 + calbot.models)": "import boto3, calbot.models",
    FLOOR: FLOOR_STMT,
}

DEPTH_SPAN = 130  # extra stack frames spread over the rounds: about one chunk's worth of small frames

_SNIPPET = """
import sys, time
sys.path[:0] = [{core!r}, {fndir!r}]
def at_depth(n):
    if n:
        return at_depth(n - 1)
    t, c = time.perf_counter(), time.process_time()
    {stmt}
    return (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000
print(*at_depth({depth}))
"""


def measure_once(
    stmt: str, fndir: Path | None = None, depth: int = 0, root: Path = ROOT
) -> tuple[float, float]:
    """Wall and CPU milliseconds of `stmt` in a fresh interpreter, run `depth` frames down."""
    code = _SNIPPET.format(core=str(root / "layers/core"), fndir=str(fndir or root), stmt=stmt, depth=depth)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "0"},
    )
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--baseline", help="a git revision whose handlers to measure alongside")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cold-start-baseline-") as tmp:
        baseline = _export(args.baseline, Path(tmp)) if args.baseline else None
        return run(args, baseline)


def _export(rev: str, into: Path) -> Path:
    """`rev`'s layers/ and functions/ as files under `into` (git archive), for measuring them."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "layers", "functions"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


BEFORE = "before:"


def run(args: argparse.Namespace, baseline: Path | None) -> int:
    fndirs = sorted(p for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
    subjects: list[tuple[str, str, Path | None, Path]] = [
        (name, stmt, None, ROOT) for name, stmt in REFERENCES.items()
    ]
    subjects += [(fndir.name, "import app", fndir, ROOT) for fndir in fndirs]
    if baseline is not None:
        subjects += [
            (BEFORE + fndir.name, "import app", baseline / "functions" / fndir.name, baseline)
            for fndir in fndirs
            if (baseline / "functions" / fndir.name / "app.py").exists()
        ]
    for _name, stmt, where, root in subjects:  # warm the bytecode caches first
        measure_once(stmt, where, root=root)
    boto3_wall: list[float] = []
    wall: dict[str, list[float]] = {name: [] for name, *_ in subjects}
    ratios: dict[str, list[float]] = {name: [] for name, *_ in subjects}
    cpu_ratios: dict[str, list[float]] = {name: [] for name, *_ in subjects}
    load_before = os.getloadavg()[0]
    for round_no in range(args.repeat):
        depth = round_no * DEPTH_SPAN // args.repeat
        for name, stmt, where, root in subjects:
            base_wall, base_cpu = measure_once("import boto3", depth=depth)
            ms, cpu = measure_once(stmt, where, depth, root)
            boto3_wall.append(base_wall)
            wall[name].append(ms)
            ratios[name].append(ms / base_wall)
            cpu_ratios[name].append(cpu / base_cpu)

    def row(name: str) -> dict[str, float]:
        quartiles = statistics.quantiles(ratios[name], n=4) if len(ratios[name]) > 1 else [0.0, 0.0, 0.0]
        return {
            "import_ms": round(statistics.median(wall[name]), 1),
            "ratio_vs_boto3": round(statistics.median(ratios[name]), 2),
            "cpu_ratio_vs_boto3": round(statistics.median(cpu_ratios[name]), 2),
            "ratio_iqr": round(quartiles[2] - quartiles[0], 2),  # how far one run's samples spread
        }

    boto3_ms = statistics.median(boto3_wall)
    rows: list[dict[str, Any]] = [{"function": fndir.name, **row(fndir.name)} for fndir in fndirs]
    for r in rows:
        if BEFORE + r["function"] in wall:
            before = row(BEFORE + r["function"])
            r["before_ratio_vs_boto3"] = before["ratio_vs_boto3"]
            r["before_cpu_ratio_vs_boto3"] = before["cpu_ratio_vs_boto3"]
    worst = max(r["ratio_vs_boto3"] for r in rows)
    result = {
        "python": sys.version.split()[0],
        "repeat": args.repeat,
        "paired": True,
        "stack_depths": [r * DEPTH_SPAN // args.repeat for r in range(args.repeat)],
        "import_boto3_ms": round(boto3_ms, 1),
        "references": [{"name": name, "statement": stmt, **row(name)} for name, stmt in REFERENCES.items()],
        "core_floor": {"statement": FLOOR_STMT, **row(FLOOR)},
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "run_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _commit("HEAD"),
        **({"baseline": {"rev": args.baseline, "commit": _commit(args.baseline)}} if baseline else {}),
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
    print(f"{'':<28}{'wall':>9}      vs boto3   (CPU time)")
    print(f"{'import boto3':<28}{boto3_ms:>9.1f} ms   1.00x")
    for r in [*({"function": name, **row(name)} for name in REFERENCES), *rows]:
        was = f"   before: {r['before_ratio_vs_boto3']:.2f}x" if "before_ratio_vs_boto3" in r else ""
        print(
            f"{r['function']:<28}{r['import_ms']:>9.1f} ms   {r['ratio_vs_boto3']:.2f}x"
            f"      ({r['cpu_ratio_vs_boto3']:.2f}x){was}"
        )
    print(
        f"worst ratio {worst:.2f}x (target <= {TARGET_RATIO}x): {'OK' if result['within_target'] else 'OVER'}"
    )
    return 0


def _commit(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short=12", rev], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
