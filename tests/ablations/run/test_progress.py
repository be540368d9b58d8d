"""The progress board when its output is not a terminal (a CI log, ``| tee``): a line per evaluation and per
finished trial, none for an epoch without one."""

import io

import pytest
from rich.console import Console

from ablations.run import progress
from ablations.run.progress import TrialBoard


def test_a_log_gets_one_line_per_evaluation_and_per_finished_trial():
    out = io.StringIO()
    board = TrialBoard("demo", {"simmim-s0": 3}, "eval/knn_top1", console=Console(file=out, force_terminal=False))
    with board:
        board.start("t1", "simmim-s0")
        board.update("t1", 0, 0.25)  # epoch 0: the untrained model's evaluation
        board.update("t1", 1, None)  # an epoch without an evaluation: no line
        board.update("t1", 3, 0.5)
        board.finish("t1", "done")
    lines = out.getvalue().splitlines()
    assert [l.split("  elapsed")[0] for l in lines[:2]] == [
        "[epoch] simmim-s0  epoch 0/3  eval/knn_top1=0.2500",
        "[epoch] simmim-s0  epoch 3/3  eval/knn_top1=0.5000",
    ]
    assert lines[2:] == ["[done] simmim-s0  epoch 3/3  eval/knn_top1=0.5000"]


@pytest.fixture
def clock(monkeypatch):
    """The board's clock, stopped: a test moves it (``clock[0] += seconds``), however loaded the machine."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_the_study_time_left_comes_from_the_pace_measured_so_far(clock):
    board = TrialBoard("demo", {"a": 4, "b": 4, "c": 4}, "eval/knn_top1", console=Console(file=io.StringIO()))
    assert board.time_left() is None  # nothing measured yet
    board.start("t1", "a")
    board.start("t2", "b")
    board.update("t1", 1, None)
    board.update("t1", 2, None)
    clock[0] += 10.0  # two epochs in 10 s: 5 s an epoch
    # a: 2 epochs left at its own pace; b (no epoch yet) and c (not started): 4 epochs at the mean pace; 2 at a time
    assert board.time_left() == pytest.approx(30.0, abs=0.5)  # a then c on one slot (10 + 20), b on the other (20)
    board.finish("t1", "done")
    assert board.time_left() == pytest.approx(20.0, abs=0.5)


def test_the_time_left_counts_the_search_samples_not_drawn_yet(clock):
    board = TrialBoard("demo", {"a": 4, "*": 2}, "eval/knn_top1", console=Console(file=io.StringIO()), samples=3)
    board.start("t1", "a")
    board.update("t1", 1, None)
    board.update("t1", 2, None)
    clock[0] += 10.0  # 5 s an epoch
    assert board.time_left() == pytest.approx(10.0 + 3 * 10.0, abs=0.5)  # a's 2 epochs, then 3 samples of 2, serially
    board.finish("t1", "done")
    board.start("t2", "search-0")  # a sample drawn: it has its own row now
    assert board.time_left() == pytest.approx(30.0, abs=0.5)  # its 2 epochs at the mean pace, then 2 samples of 2
