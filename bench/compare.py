"""Run one benchmark on a base git ref and on the working tree, alternating, in one run.

Usage: `.venv/bin/python bench/compare.py --base HEAD~3 [--rounds 2] -- bench_api.py --duration 5`
(`--same-script`: run the working tree's copy of the script on both sides, for a benchmark the
base commit does not have; it must then use only code both trees share.)

The base ref is checked out into a temporary git worktree; each side runs *its own* copy of the
benchmark script with `PYTHONPATH` pointing at its own `src/` (the same virtualenv, so the same
dependencies), and the rounds alternate base, head, base, head... so a machine that gets slower or
faster during the run affects both sides alike. Every number the script prints on a line of the
form `label ... <number> [unit]` is collected; the summary shows each label's median per side and
the head/base ratio. Lines the two sides do not share are left out of the summary (they are still
printed as the runs go).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess  # nosec B404 - fixed argv lists of our own interpreter and git
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Untracked paths of the working tree the base checkout sees too (linked, not copied).
SHARED = ("mlflow", "training/Default_Fin.csv")
#: `label: 3638 req/s`, `p99 6.59 ms`, `score_one ... 9.3` -> (label, value)
NUMBER_LINE = re.compile(r"^\s*(?P<label>[A-Za-z][^\d\n]*?)[\s:=]+(?P<value>-?\d+(?:\.\d+)?)\b")


def run_side(tree: Path, script: Path, args: list[str]) -> dict[str, float]:
    """Run `script` with `tree`'s package first on the path (bench/ beside the script too)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, str(script), *args]
    proc = subprocess.run(  # nosec B603 - our interpreter, fixed argv
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{script} failed on {tree} (exit {proc.returncode})")
    found: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        m = NUMBER_LINE.match(line)
        if m:
            found.setdefault(m["label"].strip(" .:"), float(m["value"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git ref to compare against")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side")
    parser.add_argument("script", help="benchmark file name in bench/, e.g. bench_api.py")
    parser.add_argument(
        "--same-script",
        action="store_true",
        help="run the working tree's copy of the script on both sides",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (after --)")
    ns = parser.parse_args()
    args = [a for a in ns.args if a != "--"]
    with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(  # nosec B603 B607 - git with fixed argv
            ["git", "worktree", "add", "--detach", "-q", str(base_tree), ns.base],
            cwd=ROOT,
            check=True,
        )
        for shared in SHARED:  # untracked state the benchmarks read (the trained model, the data)
            if (ROOT / shared).exists():
                target = base_tree / shared
                if target.is_dir():  # a tracked placeholder (mlflow/README.md)
                    shutil.rmtree(target)
                target.unlink(missing_ok=True)
                target.symlink_to(ROOT / shared)
        try:
            runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
            for r in range(ns.rounds):
                for side, tree in (("base", base_tree), ("head", ROOT)):
                    print(
                        f"\n##### round {r + 1}: {side} ({ns.base if side == 'base' else 'tree'})"
                    )
                    script_tree = ROOT if ns.same_script else tree
                    runs[side].append(run_side(tree, script_tree / "bench" / ns.script, args))
        finally:
            subprocess.run(  # nosec B603 B607 - git with fixed argv
                ["git", "worktree", "remove", "--force", str(base_tree)],
                cwd=ROOT,
                check=False,
            )
    labels = [k for k in runs["head"][0] if all(k in r for r in runs["base"] + runs["head"])]
    print(f"\n##### {ns.script}: median of {ns.rounds} round(s), base = {ns.base}")
    print(f"{'figure':<48} {'base':>12} {'head':>12} {'head/base':>10}")
    for label in labels:
        b = statistics.median(r[label] for r in runs["base"])
        h = statistics.median(r[label] for r in runs["head"])
        ratio = f"{h / b:.3f}" if b else "-"
        print(f"{label[:48]:<48} {b:>12.4g} {h:>12.4g} {ratio:>10}")


if __name__ == "__main__":
    main()
