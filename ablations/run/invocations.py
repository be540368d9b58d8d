"""Which invocation of a study this driver runs: a new one, or on ``--resume`` the latest, with the state it left
(refused when the study changed since). Where its files go is ``ablations.run.layout``."""

from __future__ import annotations

import json
from typing import Any

from ablations.run.files import dump_json
from ablations.run.layout import Invocation, StudyLayout
from ablations.study import Study, StudyError


def study_layout(study: Study) -> StudyLayout:
    """Where the driver keeps the study's files: ``driver_storage``, with Ray Tune's experiments under a
    ``storage`` URI when there is one."""
    spec = study.spec
    return StudyLayout.of(spec.driver_storage, study.name, spec.storage if spec.storage_uri else None)


def pick_invocation(layout: StudyLayout, study: Study, resume: bool) -> Invocation:
    """This invocation of the study: new, or the latest on resume."""
    if not resume:
        return layout.new_invocation()
    latest = layout.latest()
    if latest is None:
        raise StudyError(study.source, [f"--resume: no earlier invocation of study {study.name!r} under {layout.root}"])
    return latest


def interrupted_state(study: Study, invocation: Invocation) -> dict[str, Any]:
    """The state an earlier ``invocation`` left; refused when the study has changed since."""
    state = json.loads(invocation.state.read_text())
    if state["study"] != json.loads(dump_json(study.raw)):  # compared as stored (JSON)
        raise StudyError(
            study.source,
            [
                f"--resume: the study differs from the interrupted invocation in {invocation.folder}; "
                "resume it with the same file and --set values, or start afresh"
            ],
        )
    return state
