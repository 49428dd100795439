"""Reading a Prefect server's records over its REST API (the tests' view of what a run left)."""

import time

import servers


def post(api_url: str, path: str, body: dict) -> list | dict:
    status, out = servers._http_json("POST", f"{api_url}/{path}", body)
    assert status in (200, 201), out
    return out


def get(api_url: str, path: str) -> dict:
    status, out = servers._http_json("GET", f"{api_url}/{path}")
    assert status == 200, out
    return out


def logs(api_url: str, flow_run_id: str) -> list[dict]:
    """Every log record of the flow run, oldest first (the API pages by 200)."""
    records: list[dict] = []
    while True:
        page = post(api_url, "logs/filter", {
            "logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC",
            "limit": 200, "offset": len(records)})
        records += page
        if len(page) < 200:
            return records


def final_logs(api_url: str, flow_run_id: str, timeout: float = 60.0) -> list[dict]:
    """The flow run's log records once they are all on the server.

    A run's process sends its records in the background, in order, and can report its final
    state before the last ones arrive. The engine's last record is the flow run's own
    "Finished in state ..." line, so once that is stored every record before it is too.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = logs(api_url, flow_run_id)
        if any(r["task_run_id"] is None and r["message"].startswith("Finished in state")
               for r in records):
            return records
        assert time.monotonic() < deadline, (
            f"the flow run's final log line did not arrive within {timeout} s; last records: "
            + "\n".join(r["message"] for r in records[-5:]))
        time.sleep(1)


def log_text(api_url: str, flow_run_id: str) -> str:
    """Every log line of a finished flow run (see ``final_logs``)."""
    return "\n".join(r["message"] for r in final_logs(api_url, flow_run_id))


def artifacts(api_url: str, flow_run_id: str) -> list[dict]:
    return post(api_url, "artifacts/filter", {
        "artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})


def flow_runs_named(api_url: str, name: str) -> list[dict]:
    return post(api_url, "flow_runs/filter", {"flow_runs": {"name": {"any_": [name]}}})
