"""Every GPU figure of docs/performance.md in one command, each part bounded in time, printed as it is measured.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_report.py [--out gpu-report.md] [--smoke]

Runs the benchmarks one after another in child processes (each with a time limit, so that the whole fits in
about 8 minutes on one H200, compilation included), passes every line they print straight through, and
writes a Markdown table of their ``RESULT`` lines with the device, the date, the commit and each command to
``--out``. A part that fails or runs out of time is a row that says so; it never stops the rest. ``--smoke``
runs every part at its smallest size (what CI runs on a CPU, to keep this script from rotting).
``RESULT gpu_report_parts <parts that gave a result>/<parts>``.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.harness import child_env  # noqa: E402

# (benchmark, its arguments on a GPU, the seconds it may take there, the goal of its figure)
PARTS = [
    ("step_kernels", ["--methods", "simmim,bootmae,dtm"], 150, "fewer launches compiled; one CUDA graph per step"),
    ("study_throughput", ["--trials", "8", "--epochs", "3", "--settings", "packed,fused"], 150, ">= 100,000 img/s"),
    ("step_overhead", ["--rounds", "5"], 60, "<= 1.10"),
    ("reference_loop", ["--rounds", "5"], 45, "<= 1.05"),
    ("fused_step", ["--rounds", "5"], 30, ">= 3"),
    ("compile_cache", ["--epochs", "2"], 60, "<= 60 s cold, <= 5 s warm"),
]


def run_part(name: str, args: list[str], limit: float) -> tuple[str, float]:
    """Run one benchmark, echoing its output line by line; its RESULT value (or why there is none) and seconds."""
    cmd = [sys.executable, "-u", str(ROOT / "benchmarks" / f"{name}.py"), *args]
    print(f"== {name}: {' '.join(cmd[2:])} (at most {limit:.0f} s)", flush=True)
    start, result = time.perf_counter(), "no RESULT line"
    proc = subprocess.Popen(cmd, env=child_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watchdog = threading.Timer(limit, proc.kill)  # a part silent while it compiles is stopped all the same
    watchdog.start()
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        print(f"   {line}", flush=True)
        if line.startswith("RESULT "):
            result = line.split(maxsplit=2)[-1]
    proc.wait()
    watchdog.cancel()
    if time.perf_counter() - start >= limit and proc.returncode != 0:
        result = f"stopped after {limit:.0f} s"
    elif proc.returncode != 0:
        result = f"failed (exit {proc.returncode})"
    return result, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu-report.md"), help="where the table is written")
    p.add_argument("--smoke", action="store_true", help="every part at its smallest size (CI on a CPU)")
    args = p.parse_args()
    gpu = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if gpu else "CPU (no GPU: these are not the GPU figures)"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(f"device {name}; commit {commit.stdout.strip() or 'unknown'}", flush=True)
    rows, start = [], time.perf_counter()
    for part, part_args, limit, goal in PARTS:
        part_args = ["--smoke"] if args.smoke else part_args
        result, seconds = run_part(part, part_args, limit * (4 if args.smoke else 1))
        rows.append((part, " ".join(part_args), result, goal, seconds))
    lines = [
        f"Measured on {name}, {datetime.date.today().isoformat()}, commit {commit.stdout.strip() or 'unknown'}, "
        f"by `python benchmarks/gpu_report.py{' --smoke' if args.smoke else ''}` "
        f"({time.perf_counter() - start:.0f} s in all).",
        "",
        "| benchmark | arguments | RESULT | goal | seconds |",
        "|---|---|---|---|---|",
        *(f"| `{b}` | `{a}` | {r} | {g} | {s:.0f} |" for b, a, r, g, s in rows),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    done = sum(1 for row in rows if not row[2].startswith(("failed", "stopped", "no RESULT")))
    print(f"RESULT gpu_report_parts {done}/{len(rows)}")


if __name__ == "__main__":
    main()
