"""Stage 3 of the pipeline: a study's MLflow runs become ablation tables and figures.

``build_report`` runs four steps, each a module: ``reader`` reads the study's runs once (through MLflow's client,
only what ``ablations.contract`` names) into a ``record``; ``compute`` computes every number (``numbers`` declares
them, ``formulas`` holds their pure functions, ``aggregate`` groups seeds, ``budgets`` and ``agreement`` add the
budget table and the probes' agreement with fine-tuning); ``render`` writes every format from one list of sections
(``tables``, ``plots``, ``legend``); ``writeback`` logs the numbers and files to MLflow. ``cli`` is
``python -m ablations.report``.
"""

from ablations.report.build import build_report
from ablations.report.compute import Report
from ablations.report.record import ReportError
from ablations.report.render import print_summary

__all__ = ["Report", "ReportError", "build_report", "print_summary"]
