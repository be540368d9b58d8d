"""The tracker's writes through the journal, on a real MLflow SQLite store: made by the writer thread, a trial's
epochs in batches and in order, each once, the journal file emptied as the store takes them; a write the store
refuses for itself fails the study at the caller's next write, and is not kept."""

import json
import shutil

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ablations.run.journal import groups
from ablations.run.layout import Invocation
from ablations.run.tracking import StudyTracker
from ablations.study import load_study
from tests.ablations.conftest import write_study


def _epoch(trial: str, epoch: int, metrics: int = 3) -> dict:
    return {"op": "epoch", "trial": trial, "epoch": epoch, "metrics": {f"m{i}": 1.0 for i in range(metrics)}}


def test_groups_keep_each_trials_order_and_batch_its_consecutive_epochs():
    ops = [
        {"op": "create", "trial": "a"},
        _epoch("a", 0),
        {"op": "create", "trial": "b"},
        _epoch("a", 1),
        _epoch("b", 0),
        _epoch("a", 2, metrics=999),  # over a batch of 1,000 metrics with the two before: a batch of its own
        {"op": "end", "trial": "a"},
        _epoch("b", 1),
    ]
    assert groups(ops) == [[0], [1, 3], [5], [6], [2], [4, 7]]


@pytest.fixture
def tracker(tmp_path, mlflow_schema):
    shutil.copy(mlflow_schema, tmp_path / "mlflow.db")  # a made store (MLflow makes a new one in seconds)
    study = load_study(write_study(tmp_path))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    folder = tmp_path / "invocation"
    folder.mkdir()
    tracker = StudyTracker(uri, study.name, Invocation(folder))
    tracker.start_study(study.name, "", {}, {})
    return tracker, study, uri


def test_every_epoch_reaches_the_store_once_and_leaves_the_journal(tracker):
    tracker, study, uri = tracker
    names = [tracker.open_trial(t) for t in study.trials]
    for epoch in range(40):
        for name in names:
            assert tracker.log_epoch(name, epoch, {"train/loss": 1.0 / (epoch + 1), "eval/knn_top1": 0.5})
    assert not tracker.log_epoch(names[0], 39, {"train/loss": 9.0})  # logged already: not written again
    for name in names:
        tracker.end_trial(name, "FINISHED")
    assert tracker.flush() and tracker.kept == 0
    assert tracker.invocation.journal.read_text() == ""
    client = MlflowClient(uri)
    for name in names:
        history = client.get_metric_history(tracker.run_id(name), "train/loss")
        assert [m.step for m in history] == list(range(40))
        assert [m.value for m in history][-1] == 1.0 / 40
        assert client.get_run(tracker.run_id(name)).info.status == "FINISHED"


def test_a_write_the_store_refuses_fails_at_the_next_write_and_is_not_kept(tracker):
    tracker, study, uri = tracker
    name = tracker.open_trial(study.trials[0])
    tracker.set_tag(name, "a key MLflow refuses: !", "x")
    with pytest.raises(MlflowException, match="Invalid"):
        tracker.flush()
    with pytest.raises(MlflowException):
        tracker.log_epoch(name, 1, {"train/loss": 1.0})
    kept = [json.loads(line) for line in tracker.invocation.journal.read_text().splitlines()]
    assert all(op["op"] != "tag" for op in kept), kept  # a --resume would not refuse it again


def test_a_journal_file_that_cannot_be_written_leaves_the_writes_in_memory(tracker, capsys):
    tracker, study, uri = tracker
    tracker.invocation.journal.mkdir()  # a folder where the file would be: every write to it fails, as on a full disk
    name = tracker.open_trial(study.trials[0])
    assert tracker.log_epoch(name, 1, {"train/loss": 0.5})
    assert tracker.flush()
    assert [m.step for m in MlflowClient(uri).get_metric_history(tracker.run_id(name), "train/loss")] == [1]
    assert capsys.readouterr().err.count("cannot be written") == 1  # said once


def test_a_fault_of_the_writer_itself_reaches_the_caller_instead_of_a_hang(tmp_path, monkeypatch):
    from ablations.run import journal as journal_module

    def classify(err, uri):  # a fault of the writer's own code, outside the store's writes
        raise RuntimeError("the writer's own fault")

    def make(group):
        raise ConnectionRefusedError("no store")

    monkeypatch.setattr(journal_module, "unavailable", classify)
    kept = journal_module.Journal("http://127.0.0.1:9", tmp_path / "journal.jsonl", make)
    kept.write(_epoch("a", 0))
    with pytest.raises(RuntimeError, match="the writer's own fault"):
        kept.flush()  # no timeout: it must come back
    with pytest.raises(RuntimeError, match="the writer's own fault"):
        kept.write(_epoch("a", 1))
    assert [json.loads(line)["epoch"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()] == [0]


def test_the_journal_file_is_replaced_whole_as_the_store_takes_its_writes(tmp_path):
    from ablations.run.journal import Journal

    made = []
    kept = Journal("sqlite:///x", tmp_path / "journal.jsonl", made.extend)
    for epoch in range(3):
        kept.write(_epoch("a", epoch))
    assert kept.flush(timeout=30)
    assert [op["epoch"] for op in made] == [0, 1, 2]
    assert (tmp_path / "journal.jsonl").read_text() == ""  # rewritten with what is left: nothing
    assert [p.name for p in tmp_path.iterdir()] == ["journal.jsonl"]  # no half-written copy beside it
