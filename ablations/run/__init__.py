"""Stage 2 of the pipeline: a ``Study``'s trials run on Ray Tune and are tracked in MLflow.

``runner`` runs one invocation (``invocations``: new, or the latest on ``--resume``) of the Ray Tune
experiments ``phases`` builds (grid, or Optuna + ASHA) through ``tuner``; ``trainable`` is the trial
function that runs in Ray workers and never touches MLflow; ``callbacks`` receives every trial event in
the driver and hands it to ``tracking`` (the only MLflow writer) and ``progress`` (the live table);
``cli`` is ``python -m ablations.run``. Heavy imports (Ray, MLflow) happen only in those modules.
"""
