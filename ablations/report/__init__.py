"""Stage 3 of the pipeline: a study's MLflow runs become ablation tables and figures.

``reader`` reads the runs back through MLflow's client (tags and metric histories named in
``ablations.contract``, nothing else); ``metrics`` holds the efficiency measures as pure
functions of a curve; ``aggregate`` summarises each trial against its reference and groups seeds;
``tables`` and ``plots`` render; ``build`` writes and logs the report; ``cli`` is
``python -m ablations.report``.
"""

from ablations.report.build import Report, build_report
from ablations.report.reader import ReportError

__all__ = ["Report", "ReportError", "build_report"]
