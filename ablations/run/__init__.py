"""Stage 2 of the pipeline: a ``Study``'s trials run on Ray Tune and are tracked in MLflow.

``runner`` builds the Ray Tune experiments (grid, or Optuna + ASHA) and owns the study's state
folder for ``--resume``; ``trainable`` is the trial function that runs in Ray workers and never
touches MLflow; ``callbacks`` receives every trial event in the driver and hands it to
``tracking`` (the only MLflow writer) and ``progress`` (the live table); ``cli`` is
``python -m ablations.run``. Heavy imports (Ray, MLflow) happen only in those modules.
"""
