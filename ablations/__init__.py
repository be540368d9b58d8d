"""The ablation suite, in the order data flows: ``study`` (a YAML file becomes typed trials) ->
``run`` (trials on Ray Tune, each event written to MLflow by the driver) -> ``report`` (tables
and figures from MLflow). ``contract`` names everything the run side writes and the report side
reads; it is the only module both import."""
