"""A trial's checkpoint is read as data: the states trials write load back; one that would run code does not."""

import os
import pickle

import pytest
import torch

from ablations.run.trainable import STATE_FILE, read_state
from mto.training.trial import run_trial


def test_the_states_trials_write_load_back_as_data(tmp_path, tiny_config):
    tiny_config.train.epochs = 1
    saved = []
    run_trial(tiny_config, lambda r: saved.append(r.checkpoint) if r.checkpoint else None)
    torch.save({"members": {"a-s0": saved[-1]}, "failed": {"b-s0": "NonFiniteLossError: ..."}}, tmp_path / STATE_FILE)
    state = read_state(str(tmp_path))
    assert state["members"]["a-s0"]["epoch"] == 1 and state["failed"] == {"b-s0": "NonFiniteLossError: ..."}
    assert torch.equal(state["members"]["a-s0"]["generator"], saved[-1]["generator"])


class _RunsCode:
    def __reduce__(self):
        return os.system, ("touch ran",)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"epoch": 1, "payload": _RunsCode()}, tmp_path / STATE_FILE, pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        read_state(str(tmp_path))
    assert not (tmp_path / "ran").exists()
