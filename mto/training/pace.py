"""How fast a trial's model shape runs on this machine, measured in seconds: what a study's cost before it runs
is estimated from (``ablations.study.cost``).

``measure_pace(config)`` builds the trial as it will run (its device, precision, threads, compiled or not) on a
few batches of its data set and times, through the trial's one epoch loop (``mto.training.unit``): a first epoch
(its first steps compile, warm up and capture where the step compiles) and a second one of as many steps, one
evaluation (the probes switched on, over the images they read), one heterogeneity profile and, when fine-tuning is
on, fine-tunings of one and three epochs; per image where the work grows with the images, so that the estimate
scales to the trial's real sizes.

``python -m mto.training.pace`` reads a pickled list of ``TrialConfig`` on stdin and writes their paces as JSON
on stdout, one per line as each is measured: the suite's driver, which loads no torch, runs it in a child.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import time

import torch

from mto.config import TrialConfig
from mto.data.datasets import load_data
from mto.training.fallback import SETTLING_CALLS
from mto.training.finetune import finetune
from mto.training.unit import Unit

STEPS = SETTLING_CALLS + 2  # the steps of each timed epoch: more than the first epoch's settling calls


def _synchronised(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def measure_pace(cfg: TrialConfig, steps: int = STEPS) -> dict[str, float]:
    """The pace of ``cfg``'s shape here, in seconds: ``start_s`` (the data read and moved, the model built),
    ``settling_s`` (what the first epoch took beyond the second: compiling, warming up, capturing), ``step_s`` (a
    step of the second epoch), ``eval_s_per_image`` (an evaluation: the probes' features and fits, per image they
    read), ``profile_s`` (one heterogeneity profile), ``finetune_s_per_image`` (a fine-tuning epoch, per training
    image; 0 when fine-tuning is off)."""
    cap = steps * cfg.train.batch_size
    data_cfg = dataclasses.replace(cfg.data, max_train=min(cfg.data.max_train or cap, cap))
    if cfg.data.name == "synthetic":  # only what is read: the training batches and a small test split
        data_cfg = dataclasses.replace(data_cfg, synthetic_size=[cap * 2, min(cfg.data.synthetic_size[1], 512)])
    cfg = dataclasses.replace(cfg, data=data_cfg)
    start = time.perf_counter()
    unit = Unit([cfg], load_data(data_cfg))
    trainer = unit.trainers[0]
    device = trainer.device
    began = _synchronised(device)
    out = {"start_s": began - start}
    first = unit.train_epoch()[0]["perf/epoch_s"]
    second = unit.train_epoch()[0]["perf/epoch_s"]
    out["step_s"], out["settling_s"] = second / trainer.steps_per_epoch, max(0.0, first - second)
    d = trainer.data
    read = min(d.train_x.shape[0], cfg.eval.max_probe_train or d.train_x.shape[0]) + d.test_x.shape[0]
    read += 0 if d.val_x is None else d.val_x.shape[0]
    before = _synchronised(device)
    trainer.probe()
    out["eval_s_per_image"] = (_synchronised(device) - before) / read if trainer.probes_on else 0.0
    before = _synchronised(device)
    trainer.layer_profile(with_affinity=False)
    out["profile_s"] = _synchronised(device) - before
    out["finetune_s_per_image"] = 0.0
    if cfg.eval.finetune.enabled:  # two fine-tunings, of one and three epochs: their difference is two epochs
        took = []
        for epochs in (1, 3):
            tuned = dataclasses.replace(cfg.eval.finetune, epochs=epochs, warmup_epochs=0)
            tuned = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, finetune=tuned))
            before = _synchronised(device)
            finetune(tuned, trainer.model.encoder, trainer.data, from_epoch=0, autocast=trainer.autocast)
            took.append(_synchronised(device) - before)
        out["finetune_s_per_image"] = max(0.0, took[1] - took[0]) / 2 / d.train_x.shape[0]
    return out


def main() -> None:
    for cfg in pickle.load(sys.stdin.buffer):
        print(json.dumps(measure_pace(cfg)), flush=True)


if __name__ == "__main__":
    main()
