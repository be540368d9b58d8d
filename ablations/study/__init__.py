"""Stage 1 of the pipeline: a study file becomes a validated ``Study`` of typed trials.

``load_study(path, sets)`` reads the YAML (``loading``) and hands it to ``validation``, the one collector
of problems: the schema (``schema``), rules between fields (``rules``), arms x grid x seeds expanded
into trials with their reference pairing and grouped into units, one Ray trial each (``expansion``),
and feasibility (``feasibility``); ``messages`` words every problem as one line. Nothing here starts
Ray or touches MLflow.
"""

from ablations.study.expansion import (
    Study,
    TrialSpec,
    apply_overrides,
    flatten,
    trial_name,
    unit_name,
    validate_trial,
    with_threads,
)
from ablations.study.loading import apply_set, load_study, parse_yaml
from ablations.study.messages import StudyError
from ablations.study.schema import StudySpec
from ablations.study.validation import validate_study

__all__ = [
    "Study",
    "StudyError",
    "StudySpec",
    "TrialSpec",
    "apply_overrides",
    "apply_set",
    "flatten",
    "load_study",
    "parse_yaml",
    "trial_name",
    "unit_name",
    "validate_study",
    "validate_trial",
    "with_threads",
]
