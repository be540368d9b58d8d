"""Stage 1 of the pipeline: a study file becomes a validated ``Study`` of typed trials.

``load_study(path, sets)`` reads the YAML (``loading``), checks it against the schema
(``schema``), words every problem as one line (``messages``) and expands arms x grid x seeds
into trials with their reference pairing (``expansion``), grouped into Ray trials (``fusion``). Nothing here starts Ray or touches MLflow.
"""

from ablations.study.expansion import Study, TrialSpec, apply_overrides, flatten, trial_name, validate_study
from ablations.study.fusion import trial_units, unit_name
from ablations.study.loading import apply_set, load_study, parse_yaml
from ablations.study.messages import StudyError
from ablations.study.schema import StudySpec

__all__ = ["Study", "StudyError", "StudySpec", "TrialSpec", "apply_overrides", "apply_set", "flatten", "load_study",
           "parse_yaml", "trial_name", "trial_units", "unit_name", "validate_study"]
