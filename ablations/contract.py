"""The MLflow contract: every name the running side writes and the report side reads.

Data flows one way (study -> Ray trials -> driver-side MLflow writes -> report). The two sides
share no code but this module: tag keys, metric names, artifact names, the keys a Ray trial
reports to the driver, and the rule that turns a tracking URI into the one every process uses.

Layout in MLflow: the experiment is the study's name; one parent run per invocation of a study
(``ROLE = "study"``) holds the study file and the report; one nested child run per trial
(``ROLE = "trial"``, ``mlflow.parentRunId``) holds the trial's params (its config by dot path),
its per-epoch metrics (``step`` = epoch), its affinity maps and its encoder.
"""

from __future__ import annotations

import re
from pathlib import Path

# the metrics a trial logs are declared once, in mto (name, when logged, why absent, how a report shows them)
from mto import FINETUNE_TOP1 as FINETUNE_TOP1  # fine-tuned top-1, test split: the papers' metric
from mto import LINEAR_TOP1, METRICS
from mto import VAL_FINETUNE_TOP1 as VAL_FINETUNE_TOP1  # the same on validation: what selects
from mto import declared as declared  # a metric's declaration (None: not declared)
from mto import is_accuracy as is_accuracy  # an accuracy in [0, 1]: reports show it in %
from mto import validation_twin as validation_twin  # eval/x -> val/x: tables test, selection val

# ---- tracking store ---------------------------------------------------------------------------
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative to the working directory


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store; None for any other URI."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative SQLite or file store absolute, so every process and ``mlflow ui`` agree."""
    db = sqlite_path(uri)
    if db is not None and not db.is_absolute():
        return "sqlite:///" + str(db.resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


# ---- tags -------------------------------------------------------------------------------------
ROLE = "ablation.role"  # "study" on the parent run, "trial" on each child
STUDY = "ablation.study"  # the study's name
ARM = "ablation.arm"
SEED = "ablation.seed"
TRIAL = "ablation.trial"  # the trial's name, unique in its study
GRID_PREFIX = "ablation.grid."  # one tag per grid axis: ablation.grid.<dot path> = value
REFERENCE_TRIAL = "ablation.reference_trial"  # the trial a trial is compared with (same seed and study-grid point)
REFERENCE_OF_TRIAL = "ablation.reference_arm_of_trial"  # that trial's arm (pairs by tags when it is missing)
FAILURE = "ablation.failure"  # why a FAILED trial failed: "<ExceptionType>: <message>"
FAILED_BEFORE = "ablation.failed_before"  # on a trial run again by --resume: why it had failed (outside the trial)
CHECKPOINT_FALLBACK = "ablation.checkpoint_fallback"  # on a trial resumed past an unreadable checkpoint: which, why
# raised by the trial's own numbers or config (mto): running it again fails the same way
OWN_FAILURES = ("NonFiniteLossError", "ConfigError", "GPUOutOfMemoryError")
# raised by Ray when the trial's machine was lost, not by the trial: its node lost, its worker killed by a signal or
# Ray's OOM killer, its connection to the cluster lost. Never the trial's fault: --resume always runs it again. Ray's
# own classes alone: Python's ConnectionError is left out (a trial's own code raises it), and torch's OutOfMemoryError
# never reaches a reason (the trial names it GPUOutOfMemoryError, its own failure).
LOST_MACHINE_FAILURES = (
    "ActorDiedError",
    "ActorUnavailableError",
    "RayActorError",
    "NodeDiedError",
    "WorkerCrashedError",
    "LocalRayletDiedError",
    "OutOfMemoryError",
    "ObjectLostError",
    "OwnerDiedError",
    "RaySystemError",
    "RpcError",
)
RESUMED = "ablation.resumed_from_epoch"  # set on a trial restarted from a checkpoint
NODE_TAG = "ablation.node"  # on each trial run: the Ray node id it last ran on (a retried trial may move)
FUSED_UNIT = "ablation.fused_unit"  # set on a trial trained in a fused unit (resources.fuse): the unit's name
STEP_TAG = "ablation.step"  # on each trial run: how its steps run ("compiled with CUDA graphs", "compiled", "eager")
STEP_FALLBACK_TAG = "ablation.step_fallback"  # on a trial whose step fell back: "<way> failed: <reason>; ..."
ENCODER_TAG = "ablation.encoder"  # on a trial run once its encoder is logged: the encoder's artifact path
# on the parent run: what the report compares
TARGET_METRIC = "ablation.target.metric"
TARGET_FRACTION = "ablation.target.fraction"
REFERENCE_ARM = "ablation.reference"
ETA = "ablation.eta"  # while the study runs: its time left and when it ends, from the pace measured so far
REPORT_EPOCHS = "ablation.report_epochs"  # the heterogeneity figure's epochs, comma-separated ("": first, middle, last)

# ---- params and metrics -------------------------------------------------------------------------
EPOCHS_PARAM = "train.epochs"  # the planned epochs of a trial (its config is logged by dot path)
DATA_PARAM = "data.name"  # the data set; "synthetic" = random images (throughput runs): accuracies meaningless
SYNTHETIC_DATA = "synthetic"
DEFAULT_TARGET_METRIC = LINEAR_TOP1  # what tables report: mto's linear probe on the test split
DEFAULT_SEARCH_METRIC = validation_twin(LINEAR_TOP1)  # what Optuna and ASHA select on: the same probe on validation
PROBE_METRICS = tuple(m.name for m in METRICS if m.proxy)  # the frozen-feature proxies of fine-tuning
BUDGET_AXIS = "train.epochs"  # a grid over it (the study's budgets) = separately scheduled runs
EPOCH_METRIC = "trial/epoch"  # logged every epoch (0 included): where a resumed driver picks up
FINETUNE_EPOCH_METRIC = "trial/finetune_epoch"  # logged with each fine-tuning result, at the epoch fine-tuned from
HETERO_PREFIX = "hetero/l"  # hetero/l00 .. hetero/lNN: heterogeneity per layer
SYSTEM_PREFIX = "system/"  # GPU utilisation and memory per epoch (MLflow's system-metric names), on CUDA only
SUMMARY_PREFIX = "summary/"  # the report's numbers of each trial, written on its run (step 0): report.numbers

# ---- artifacts --------------------------------------------------------------------------------
STUDY_FILE = "study.yaml"  # on the parent run: the study file as given
RESOLVED_TRIALS = "resolved_trials.json"  # on the parent run: every trial's full config, in study order
REPORT_FOLDER = "report"  # on the parent run: tables, report.html, figures
AFFINITY_FOLDER = "affinity"  # on each trial run: affinity_eNNNN.npz
FINETUNE_FOLDER = "finetune"  # on each trial run: loss_eNNNN.json, the fine-tuning loss per fine-tuning epoch
ENCODER_FOLDER = "encoder"  # on each trial run that reached its last epoch: model.safetensors, config.json (timm's)

# ---- what a Ray trial reports to the driver, beside its metrics ---------------------------------
EPOCH = "epoch"
OBJECTIVE = "objective"  # the search metric, carried forward between evaluations (for ASHA/Optuna)
AFFINITY_DATA = "artifact/affinity"  # this epoch's affinity maps as .npz bytes: they travel in the result, the driver
#   writes and attaches the file (no worker's disk is read, so trials may run on any node of a cluster)
NODE = "node"  # the Ray node the trial ran this epoch on
RESUMED_FROM = "resumed_from_epoch"  # set when the trial restarted from a checkpoint
RESTORE_NOTE = "restore_note"  # set when the newest checkpoint could not be read: what was skipped, why
STEP_WAY = "step_way"  # how the trial's steps run now (the STEP_TAG's value)
STEP_FALLBACKS = "step_fallbacks"  # each way of the step that failed to compile or capture, "<way> failed: <reason>"
MEMBERS = "members"  # every Ray trial is a unit of K >= 1 trials: {trial name: that trial's keys above and metrics}
MEMBER_FAILURES = "member_failures"  # {trial name: reason} of the unit's members that failed this epoch
PHASE = "phase"  # "train", or FINETUNE_PHASE for the fine-tuning result of an epoch (its second report)
FINETUNE_PHASE = "finetune"
FINETUNE_CURVE = "artifact/finetune_loss"  # the fine-tuning loss per fine-tuning epoch (a list), for the driver
ENCODER_DATA = "artifact/encoder"  # at the trial's last epoch: its encoder's files, {name: bytes}, for the driver


def own_failure(reason: str) -> bool:
    """Whether a ``FAILURE`` reason is the trial's own (a NaN loss, an invalid sample): running it again fails
    the same way. Any other (a full disk, a killed worker, a lost node) is the machine's: ``--resume`` retries it."""
    return reason.split(":", 1)[0].strip() in OWN_FAILURES


def lost_machine(reason: str) -> bool:
    """Whether a ``FAILURE`` reason says the trial's machine was lost (``LOST_MACHINE_FAILURES``): a failure that
    counts against ``retries`` only, however often it comes, and never settles the trial."""
    return reason.split(":", 1)[0].strip() in LOST_MACHINE_FAILURES


def same_failure(reason: str, before: str) -> bool:
    """Whether two ``FAILURE`` reasons are the same failure: the same exception and message once numbers (process
    ids, addresses, sizes, Ray's hexadecimal ids) are left out. A trial failed the same way twice fails for good,
    unless the machine was lost (``lost_machine``)."""
    return bool(reason) and _failure_kind(reason) == _failure_kind(before)


def _failure_kind(reason: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\d+", "#", reason.strip())  # ids (hex) are numbers too


def is_logged_metric(key: str) -> bool:
    """Whether a reported key is a metric to log (``train/...``, ``eval/...``), not a control key."""
    return "/" in key and not key.startswith(("artifact/", "config/"))


# ---- written by the report -----------------------------------------------------------------------
REACHED = "summary/reached"  # on each trial run: 1 when it reached the target, 0 when censored (never reached)
ARM_METRIC_PREFIX = (
    "arm/"  # on the parent run: arm/<arm>[/<axis>_<value>...]/{rauc,final,auc,epochs_to_target,reached,speedup}
)
