"""Fast paths for an ``mlflow server``: the report's reads in a few requests.

Through ``MlflowClient`` a report over 1,000 trial runs would make one request per run and metric
(``get_metric_history``) and parse every run of the listing into protobuf messages and entities.
Here the same rows come through two endpoints, with MLflow's own credentials and retries
(``mlflow.utils.credentials`` and ``mlflow.utils.rest_utils``: MLflow's internal helpers, not its public
API, as its REST store sends every request):

- ``POST /api/2.0/mlflow/runs/search``: MLflow's PUBLIC REST API (what ``MlflowClient.search_runs``
  calls; its JSON is documented with the REST API), read here straight from the JSON.
- ``GET /ajax-api/2.0/mlflow/metrics/get-history-bulk``: NOT public. It is the endpoint MLflow's own
  UI draws its charts from (``mlflow/server/__init__.py``): one metric of up to 100 runs and 25,000
  points a request, in the order of ``get_metric_history_bulk`` (run, timestamp, step, value). It may
  change or be missing (a server that implements only the public API, a gateway that forwards only
  ``/api/``): where it answers 404 or not in JSON, ``metric_points`` returns None and the reader uses the public
  ``get_metric_history`` per run. A response that may be cut (as many points as the server's cap, or a
  run without the step its latest value has) is asked again in halves, down to one run; a run whose
  history is still incomplete then is read from the public API.

The generic paths (the client's public API) stay the reference: tests check both give the same runs
and histories.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from mlflow.entities import Run
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.rest_utils import http_request, verify_rest_response

from ablations.report.sqlstore import RunRow

SEARCH = "/api/2.0/mlflow/runs/search"  # public
HISTORY_BULK = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"  # not public: MLflow's UI's
RUNS_PER_REQUEST, POINTS_PER_REQUEST = 100, 25_000  # the bulk endpoint's limits (mlflow/server/handlers.py)
PAGE = 50_000  # runs per page of the search: the public API's most

Points = dict[str, list[tuple[int, float]]]  # run id -> its (step, value) in the bulk order


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def child_runs(uri: str, parent: Run, params: tuple[str, ...], windows: int = 8, threads: int = 4) -> list[RunRow]:
    """The active runs of the parent's experiment whose parent is ``parent``, in ``search_runs``' order (start
    time descending, then run id), through the public search endpoint.

    The server spends its time building every run it returns (all its params and tags), one request on one of
    its workers: the runs are asked for in ``windows`` requests, ``threads`` at a time, each for the runs that
    started in one slice of the parent's time (from its start to its end, or now), the first and the last
    slices open-ended, so that every run is in exactly one whatever the clocks."""
    creds = get_default_host_creds(uri)
    begin, end = parent.info.start_time or 0, parent.info.end_time or int(time.time() * 1000)
    bounds = [begin + (end - begin) * i // windows for i in range(1, windows)]
    base = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
    ranges = [
        " AND ".join(
            [
                base,
                *([f"attributes.start_time >= {lo}"] if lo is not None else []),
                *([f"attributes.start_time < {hi}"] if hi is not None else []),
            ]
        )
        for lo, hi in zip([None, *bounds], [*bounds, None])
    ]

    def search(filter_string: str) -> list[dict]:
        runs, token = [], None
        while True:
            body = {"experiment_ids": [parent.info.experiment_id], "filter": filter_string, "max_results": PAGE}
            page = verify_rest_response(
                http_request(creds, SEARCH, "POST", json={**body, **({"page_token": token} if token else {})}), SEARCH
            ).json()
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                return runs

    with ThreadPoolExecutor(threads) as pool:
        runs = [run for found in pool.map(search, ranges) for run in found]
    runs.sort(key=lambda r: (-int(r["info"].get("start_time", 0)), r["info"]["run_id"]))
    return [_row(run, params) for run in runs]


def _row(run: dict, params: tuple[str, ...]) -> RunRow:
    info, data = run["info"], run.get("data", {})
    tags = {t["key"]: t.get("value", "") for t in data.get("tags", [])}
    return RunRow(
        info["run_id"],
        info.get("run_name") or tags.get(MLFLOW_RUN_NAME, ""),
        info.get("status", "RUNNING"),
        tags,
        {p["key"]: p.get("value", "") for p in data.get("params", []) if p["key"] in params},
        {m["key"]: (int(m.get("step", 0)), float(m["value"])) for m in data.get("metrics", [])},
    )


def metric_points(uri: str, runs: dict[str, int], key: str, threads: int = 4) -> tuple[Points, list[str]] | None:
    """Every (step, value) of metric ``key`` of ``runs`` (run id -> the step of its latest value of ``key`` when
    listed) through the bulk endpoint, ``threads`` requests at a time. Returns (points per run, the runs whose
    history the endpoint did not return whole: read them through the public API), or None when the server has
    no bulk endpoint."""
    creds = get_default_host_creds(uri)
    ids = list(runs)

    def fetch(chunk: list[str]) -> tuple[Points, list[str]] | None:
        query = {"run_id": chunk, "metric_key": key, "max_results": POINTS_PER_REQUEST}
        response = http_request(creds, HISTORY_BULK, "GET", params=query)
        if response.status_code == 404 or "json" not in response.headers.get("Content-Type", ""):
            return None  # no such endpoint (a server's catch-all answers with its web page)
        metrics = verify_rest_response(response, HISTORY_BULK).json().get("metrics", [])
        points: Points = {}
        for m in metrics:
            points.setdefault(m["run_id"], []).append((int(m.get("step", 0)), float(m["value"])))
        cut = len(metrics) >= POINTS_PER_REQUEST or any(
            r not in points or max(s for s, _ in points[r]) < runs[r] for r in chunk
        )
        if not cut:
            return points, []
        if len(chunk) == 1:  # one run's history past the cap, or cut short: left to the public API
            return {}, chunk
        halves = [fetch(chunk[: len(chunk) // 2]), fetch(chunk[len(chunk) // 2 :])]
        if None in halves:
            return None
        return {k: v for h in halves for k, v in h[0].items()}, [r for h in halves for r in h[1]]

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(fetch, [ids[i : i + RUNS_PER_REQUEST] for i in range(0, len(ids), RUNS_PER_REQUEST)]))
    if None in results:
        return None
    return {k: v for r in results for k, v in r[0].items()}, [run for r in results for run in r[1]]
