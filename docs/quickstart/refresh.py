"""Run the quickstart afresh and write what it reports into the docs: ``make docs-quickstart``.

Runs ``python -m ablations.run studies/quickstart.yaml`` as a user does, in a new temporary folder (its own Ray
storage and MLflow store), times it, then copies the report's Markdown, CSV and figures into this folder and
puts the report's table, with the date, the machine and the study's wall time, between the README's
``<!-- quickstart -->`` markers. tests/ablations/report/test_report_e2e.py fails when the README's table is not
what the quickstart reports at the current code.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
START, END = "<!-- quickstart -->", "<!-- /quickstart -->"


def first_table(markdown: str) -> list[str]:
    """The lines of the first Markdown table in ``markdown``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        cmd = [sys.executable, "-m", "ablations.run", str(ROOT / "studies" / "quickstart.yaml")]
        cmd += ["--set", f"storage={folder / 'ray_results'}", "--set", f"tracking.uri=sqlite:///{folder}/mlflow.db"]
        start = time.monotonic()
        subprocess.run(cmd, cwd=folder, env=env, check=True)
        seconds = time.monotonic() - start
        (report,) = (folder / "reports" / "quickstart").iterdir()
        for old in HERE.glob("*"):
            if old.suffix in (".md", ".csv", ".png"):
                old.unlink()
        for made in [report / "ablation.md", report / "ablation.csv", *report.glob("*.png")]:
            shutil.copy(made, HERE / made.name)
    table = first_table((HERE / "ablation.md").read_text())
    minutes, secs = divmod(round(seconds), 60)
    took = f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
    block = [
        START,
        f"The table below is the report of that command, run on {datetime.date.today().isoformat()} on a "
        f"{os.cpu_count()}-core CPU machine in {took} (`reports/quickstart/<run>/ablation.md`, copied to "
        "[docs/quickstart/](docs/quickstart/ablation.md) by `make docs-quickstart`); kNN top-1 on the test split, "
        "in %:",
        "",
        *table,
        END,
    ]
    readme = ROOT / "README.md"
    text = readme.read_text()
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    readme.write_text(before + "\n".join(block) + after)
    print(f"quickstart: {seconds:.0f} s; README.md and {HERE.relative_to(ROOT)}/ written")


if __name__ == "__main__":
    main()
