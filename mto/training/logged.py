"""Every metric a trial logs, declared once: its name, when it is logged, why it may be absent, and how a report
shows it. Torch-free, so a study is checked against it before anything starts.

The trial's probes (``Trainer.probe``), the suite's MLflow contract, the study checks that refuse a target metric
no trial logs, the report's tables and its legend are all built from ``METRICS``. A frozen-feature probe is one
declaration here and one scorer in ``mto.training.probes`` (its ``probe``); docs/method.md lists the names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mto.methods.registry import load

TEST_SPLIT, VALIDATION_SPLIT = "eval", "val"  # the prefixes of a probe scored on the test / the validation split
KNN_TOP1, LINEAR_TOP1 = f"{TEST_SPLIT}/knn_top1", f"{TEST_SPLIT}/linear_top1"
FINETUNE_TOP1, VAL_FINETUNE_TOP1 = "finetune/top1", "val/finetune_top1"
TRAIN_LOSS, TRAIN_LR = "train/loss", "train/lr"
FINETUNE_TRAIN_LOSS, FINETUNE_SECONDS = "finetune/train_loss", "finetune/seconds"
EVALUATED = "before training (epoch 0) and every eval.every epochs"
FINETUNED = "at the epochs of eval.finetune.at, with step = the pre-training epoch fine-tuned from"


@dataclass(frozen=True)
class LoggedMetric:
    """One metric a trial logs (``name``, on the test split where it has splits) and how a report shows it."""

    name: str
    header: str  # the report's words for it ("Final <header>", "<header> @ 50 ep")
    definition: str  # what it measures, in a sentence
    when: str  # when the trial logs it
    switch: str | None = None  # the setting (dot path) that must be true for it to be logged; None: always
    validation: str | None = None  # the same measure on the validation split (what selection reads)
    accuracy: bool = True  # in [0, 1]: tables and figures show it in %
    higher_is_better: bool = True
    proxy: bool = False  # a frozen-feature probe: a stand-in for fine-tuned accuracy, never the papers' metric
    probe: str | None = None  # "module:function" fitting the probe: (features, labels, classes, eval) -> scorer
    off: str = "that probe is off"  # what ``switch`` being false means

    def scorer(self) -> Callable[..., Callable[[Any, Any], float]]:
        """The probe's fitting function (imports torch)."""
        return load(self.probe or "")


def _probe(name: str, words: str, what: str, switch: str, fit: str) -> LoggedMetric:
    key = name.split("/", 1)[1]
    return LoggedMetric(
        name,
        key.replace("_", " "),
        f"{what} on frozen mean-pooled patch features, fitted on the pre-training images ({words})",
        EVALUATED,
        switch,
        f"{VALIDATION_SPLIT}/{key}",
        proxy=True,
        probe=f"mto.training.probes:{fit}",
    )


def _finetuned(name: str, header: str, what: str, **rest: Any) -> LoggedMetric:
    return LoggedMetric(name, header, what, FINETUNED, "eval.finetune.enabled", off="no fine-tuning", **rest)


METRICS: tuple[LoggedMetric, ...] = (
    _probe(KNN_TOP1, "cosine kNN", "top-1 of weighted cosine kNN", "eval.knn", "knn_scorer"),
    _probe(LINEAR_TOP1, "linear probe", "top-1 of a linear classifier", "eval.linear", "linear_scorer"),
    _finetuned(
        FINETUNE_TOP1,
        "top1",
        "top-1 of the encoder fine-tuned end to end: the accuracy MIM papers report",
        validation=VAL_FINETUNE_TOP1,
    ),
    _finetuned(
        FINETUNE_TRAIN_LOSS,
        "train loss",
        "the fine-tuning's training loss in its last epoch",
        accuracy=False,
        higher_is_better=False,
    ),
    _finetuned(
        FINETUNE_SECONDS, "seconds", "the fine-tuning's wall-clock time", accuracy=False, higher_is_better=False
    ),
    LoggedMetric(
        TRAIN_LOSS, "loss", "the epoch's mean training loss", "every epoch", accuracy=False, higher_is_better=False
    ),
    LoggedMetric(TRAIN_LR, "lr", "the learning rate at the epoch's end", "every epoch", accuracy=False),
)
# logged by pattern: a method's own loss parts, timings, heterogeneity per layer (checked against the MTO stack)
FAMILIES = ("train/loss_<part>", "perf/<timing>", "hetero/lNN")
_TIMINGS_AND_PARTS = re.compile(r"train/loss_\w+|perf/\w+")
_HETERO = re.compile(r"hetero/l(\d\d)")


def declared(metric: str) -> LoggedMetric | None:
    """The declaration of ``metric``, by its own name or its validation twin's."""
    return next((m for m in METRICS if metric in (m.name, m.validation)), None)


def probes() -> tuple[LoggedMetric, ...]:
    """The frozen-feature probes, in declaration order."""
    return tuple(m for m in METRICS if m.probe)


def is_accuracy(metric: str) -> bool:
    """Whether ``metric`` is an accuracy in [0, 1] (shown in % by tables and figures)."""
    m = declared(metric)
    return m is not None and m.accuracy


def validation_twin(metric: str) -> str | None:
    """The validation-split counterpart of a test-split metric (``eval/linear_top1`` -> ``val/linear_top1``)."""
    m = declared(metric)
    return m.validation if m is not None and metric == m.name else None


def why_absent(config: Any, metric: str) -> str | None:
    """Why a trial with ``config`` (an ``mto.config.TrialConfig``) never logs ``metric``; None when it does."""
    m = declared(metric)
    if metric.startswith(VALIDATION_SPLIT + "/") and config.data.val_fraction == 0:
        return "data.val_fraction is 0 (there is no validation split)"
    if m is not None:
        return None if m.switch is None or _setting(config, m.switch) else f"{m.switch} is false ({m.off})"
    if _TIMINGS_AND_PARTS.fullmatch(metric):
        return None
    layer = _HETERO.fullmatch(metric)
    if layer:
        top = config.num_mto_layers
        return None if int(layer.group(1)) <= top else f"its MTO stack has layers 0 to {top}"
    known = [n for m in METRICS for n in (m.name, m.validation) if n]
    return f"unknown metric; known: {', '.join(known)}, {', '.join(FAMILIES)}"


def _setting(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config
