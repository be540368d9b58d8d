"""How fast a trial's model shape runs on this machine, measured in seconds: what a study's cost before it runs
is estimated from (``ablations.study.cost``).

``measure_pace(config)`` builds the trial as it will run (its device, precision, threads, compiled or not) on a
few batches of its data set and times, with the device synchronised: its first optimisation steps (compiling,
warming up and capturing, where the step compiles), the steps after them, one evaluation (the probes switched
on, over the images they read), one heterogeneity profile and, when fine-tuning is on, one fine-tuning epoch;
per image where the work grows with the images, so that the estimate scales to the trial's real sizes.

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
from mto.training.trainer import Trainer

STEPS = 4  # timed steps after the settling ones


def _synchronised(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def measure_pace(cfg: TrialConfig, steps: int = STEPS) -> dict[str, float]:
    """The pace of ``cfg``'s shape here, in seconds: ``start_s`` (data on the device and the model built),
    ``settling_s`` (what the first ``SETTLING_CALLS`` steps take beyond as many later steps: compiling, warming
    up, capturing), ``step_s`` (a step after them), ``eval_s_per_image`` (an evaluation: the probes' features
    and fits, per image they read), ``profile_s`` (one heterogeneity profile), ``finetune_s_per_image`` (a
    fine-tuning epoch, per training image; 0 when fine-tuning is off)."""
    batch = cfg.train.batch_size
    cap = (SETTLING_CALLS + steps) * batch
    data_cfg = dataclasses.replace(cfg.data, max_train=min(cfg.data.max_train or cap, cap))
    if cfg.data.name == "synthetic":  # only what is read: a batch per step and a small test split
        data_cfg = dataclasses.replace(data_cfg, synthetic_size=[cap * 2, min(cfg.data.synthetic_size[1], 512)])
    cfg = dataclasses.replace(cfg, data=data_cfg)
    start = time.perf_counter()
    trainer = Trainer(cfg, load_data(data_cfg))
    device = trainer.device
    plan = trainer.epoch_plan()
    inputs = [trainer.step_inputs(plan, s) for s in range(SETTLING_CALLS + steps)]
    began = _synchronised(device)
    out = {"start_s": began - start}
    for i in inputs[:SETTLING_CALLS]:
        trainer.step(*i)
    settled = _synchronised(device)
    for i in inputs[SETTLING_CALLS:]:
        trainer.step(*i)
    done = _synchronised(device)
    out["step_s"] = (done - settled) / steps
    out["settling_s"] = max(0.0, settled - began - SETTLING_CALLS * out["step_s"])
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
