"""The tests mirror the code: one folder of tests per package of mto and per stage of ablations."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"study", "run", "report"}  # ablations' stages, each a package and a folder of tests
ACROSS_STAGES = {"test_seams.py"}  # what holds between stages: the MLflow contract


def test_the_ablations_tests_sit_in_the_folder_of_their_stage():
    stages = {p.name for p in (ROOT / "ablations").iterdir() if (p / "__init__.py").is_file()}
    assert stages == STAGES
    folders = {p.name for p in (ROOT / "tests" / "ablations").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == STAGES, f"tests/ablations/ should have one folder per stage, {sorted(STAGES)}: {sorted(folders)}"
    loose = {p.name for p in (ROOT / "tests" / "ablations").glob("test_*.py")} - ACROSS_STAGES
    assert not loose, f"tests of one stage belong in its folder: {sorted(loose)}"
