"""Reading a study's runs back from a real MLflow store."""

from mlflow import MlflowClient


def study_runs(uri: str, experiment: str = "tiny"):
    """(parent runs, {trial name: child run}) of an experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ablation.role") == "study"]
    children = {r.data.tags["ablation.trial"]: r for r in runs if r.data.tags.get("ablation.role") == "trial"}
    assert len(children) == sum(r.data.tags.get("ablation.role") == "trial" for r in runs), "duplicate trial runs"
    return parents, children


def steps(uri: str, run, metric: str) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, metric)]
