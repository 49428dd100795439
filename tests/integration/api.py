"""Reading a Prefect server's records over its REST API (the tests' view of what a run left)."""

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


def log_text(api_url: str, flow_run_id: str) -> str:
    return "\n".join(r["message"] for r in logs(api_url, flow_run_id))


def artifacts(api_url: str, flow_run_id: str) -> list[dict]:
    return post(api_url, "artifacts/filter", {
        "artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})


def flow_runs_named(api_url: str, name: str) -> list[dict]:
    return post(api_url, "flow_runs/filter", {"flow_runs": {"name": {"any_": [name]}}})
