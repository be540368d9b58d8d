"""The one collector of a study's problems: everything knowable before start is checked here, in stages, and
every problem found in a stage is reported together (one line each, exit 2 in the CLI).

1. the schema (``schema``: keys, types, single-field rules, and each trial setting's own dataclass check);
2. rules between fields (``rules``);
3. every trial's config (``expansion``: arms x grid x seeds, each a validated ``TrialConfig``, and both ends of
   each Optuna dimension);
4. feasibility (``feasibility``: settings valid one by one that cannot work together or on this machine);
5. files: each data set, and each method's own file checks (DTM's teacher), read once per distinct setting.

A stage runs only when the ones before it found nothing, as each needs what they checked.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ablations.study.expansion import Study, check_search_space, expand
from ablations.study.feasibility import check_feasibility
from ablations.study.messages import Problems, describe
from ablations.study.rules import check_rules
from ablations.study.schema import StudySpec
from mto import ConfigError, check_data, registry


def validate_study(
    raw: dict[str, Any],
    source: str,
    lines: dict[tuple, int] | None = None,
    *,
    check_paths: bool = True,
    set_keys: list[str] | None = None,
) -> Study:
    """The study ``raw`` (read from ``source``, then edited by ``--set`` at ``set_keys``), validated and expanded
    into its trials.

    Raises:
        StudyError: with every problem of the first stage that found any; nothing has been started.
    """
    problems = Problems(source, lines, raw, set_keys)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        for e in err.errors():
            problems.say(describe(e, problems))
        problems.raise_any()
        raise  # unreachable: a ValidationError has errors
    check_rules(spec, problems)
    problems.raise_any()
    trials = expand(spec, problems)
    check_search_space(spec, problems)
    problems.raise_any()
    check_feasibility(spec, trials, problems)
    if check_paths:
        _check_files(trials, problems)
    problems.raise_any()
    return Study(spec, source, trials, raw)


def _check_files(trials: list, problems: Problems) -> None:
    """Each data set and each method's file checks, once per distinct setting (a method's may load torch: DTM's
    teacher is read into the configured encoder)."""
    checked = set()
    for t in trials:
        c = t.config
        checks = [((c.data.name, c.data.path), lambda c=c: check_data(c.data))]
        preflight = registry.get(c.mim.method).preflight  # a method's checks that read files (DTM's teacher)
        if preflight is not None and not problems:  # the teacher is read into the configured encoder
            checks.append(
                (
                    (repr(c.mim), repr(c.model), c.data.image_size, c.data.name),
                    lambda c=c, preflight=preflight: preflight(c),
                )
            )
        for key, check in checks:
            if key not in checked:
                checked.add(key)
                try:
                    check()
                except ConfigError as err:
                    problems.say(f"trial {t.name}: {err}")
