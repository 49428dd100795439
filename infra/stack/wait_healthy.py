"""Waits until every service of the compose project is healthy (one-shot services: exited 0),
then prints when each one started and turned healthy, relative to a start time, in the order
they turned healthy, and checks that each service started only after its dependencies were
healthy (or, for a one-shot, had completed).

    wait_healthy.py --project decflow --since EPOCH_SECONDS [--timeout 600] [--compose-config FILE]

Reads the containers through the docker CLI (labels com.docker.compose.*). The times come from
the daemon's events (container start, `health_status: healthy`, die with its exit code), so
polling does not blur them; a service already running before --since shows as such. Exit 1,
with the last health probe output of the failing services, when one turns unhealthy, a one-shot
exits non-zero, or the timeout passes. Standard library only (PyYAML, when importable, for the
dependency check).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime

DOCKER = os.environ.get("DOCKER", "docker")


def ts(value: str) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds) as epoch seconds; None for the zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    date, _, frac = value.rstrip("Z").partition(".")
    zone = ""
    for sign in "+-":
        if sign in frac:
            frac, _, zone = frac.partition(sign)
            zone = sign + zone
    seconds = datetime.fromisoformat(date + (zone or "+00:00")).timestamp()
    return seconds + float("0." + (frac or "0"))


def containers(project: str) -> list[dict]:
    ids = subprocess.run([DOCKER, "ps", "-aq", "--filter",
                          f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return []
    out = subprocess.run([DOCKER, "inspect", *ids], capture_output=True, text=True, check=True)
    return [c for c in json.loads(out.stdout)
            if c["Config"]["Labels"].get("com.docker.compose.oneoff") != "True"]


def state(c: dict) -> tuple[str, float | None]:
    """('healthy' | 'completed' | 'waiting' | 'failed: why', time it became healthy/completed)."""
    s = c["State"]
    health = s.get("Health")
    if s["Status"] == "exited":
        if health is None and s["ExitCode"] == 0:
            return "completed", ts(s["FinishedAt"])
        return f"failed: exited with {s['ExitCode']}", None
    if s["Status"] in ("created", "restarting") or health is None:
        if s["Status"] == "running" and health is None:
            return "running (no healthcheck)", ts(s["StartedAt"])
        return "waiting", None
    if health["Status"] == "healthy":
        return "healthy", None
    if health["Status"] == "unhealthy":
        last = (health.get("Log") or [{}])[-1].get("Output", "").strip()
        return f"failed: unhealthy ({last[-300:]})", None
    return "waiting", None


def events(project: str, since: float) -> dict[str, dict[str, float]]:
    """service -> {'start': t, 'healthy': t, 'exit0': t}: the first of each after `since`
    (healthy/exit0 after that start)."""
    out = subprocess.run([DOCKER, "events", "--since", f"{since:.3f}", "--until",
                          f"{time.time():.3f}", "--filter", "type=container", "--filter",
                          f"label=com.docker.compose.project={project}", "--format",
                          "{{json .}}"], capture_output=True, text=True, check=True).stdout
    seen: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        e = json.loads(line)
        attrs = e.get("Actor", {}).get("Attributes", {})
        if attrs.get("com.docker.compose.oneoff") == "True":
            continue
        service = attrs.get("com.docker.compose.service")
        t = e["timeNano"] / 1e9
        mark = seen.setdefault(service, {})
        action = e.get("Action") or e.get("status", "")
        if action == "start" and "start" not in mark:
            mark["start"] = t
        elif action == "health_status: healthy" and "start" in mark:
            mark.setdefault("healthy", t)
        elif action == "die" and "start" in mark and attrs.get("exitCode") == "0":
            mark.setdefault("exit0", t)
    return seen


def dependencies(config_file: str | None) -> dict[str, list[str]]:
    if not config_file:
        return {}
    try:
        import yaml
    except ImportError:
        return {}
    with open(config_file) as f:
        services = (yaml.safe_load(f) or {}).get("services") or {}
    return {name: list(svc.get("depends_on") or []) for name, svc in services.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", required=True)
    ap.add_argument("--since", type=float, required=True, help="epoch seconds of `up`")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--compose-config", help="output of `docker-compose config` (YAML)")
    args = ap.parse_args()
    deps = dependencies(args.compose_config)

    deadline = time.time() + args.timeout
    last_line = ""
    while True:
        cs = containers(args.project)
        states = {c["Config"]["Labels"]["com.docker.compose.service"]: (c, *state(c)) for c in cs}
        failed = {n: s for n, (_, s, _) in states.items() if s.startswith("failed")}
        waiting = sorted(n for n, (_, s, _) in states.items() if s == "waiting")
        missing = sorted(set(deps) - set(states))
        if failed:
            for name, why in sorted(failed.items()):
                print(f"wait: {name} {why}", file=sys.stderr)
            return 1
        if not cs:
            print(f"wait: no containers of project {args.project}", file=sys.stderr)
            return 1
        if not waiting and not missing:
            break
        if time.time() > deadline:
            print(f"wait: still not healthy after {args.timeout:.0f} s: "
                  f"{', '.join(waiting + missing)}", file=sys.stderr)
            return 1
        line = f"waiting for {', '.join(waiting + missing)}"
        if line != last_line:
            print(f"  {time.time() - args.since:6.1f} s  {line}", flush=True)
            last_line = line
        time.sleep(2)

    marks = events(args.project, args.since)
    rows = []
    for name, (c, status, _) in states.items():
        m = marks.get(name, {})
        started = m.get("start")
        ready = m.get("healthy") or m.get("exit0")
        if started is None:
            status += " (already running)"
            started = ready = args.since
        rows.append((ready or time.time(), name, started, status))
    ready_at = {name: ready for ready, name, _, _ in rows}
    problems = []
    for ready, name, started, status in rows:
        if "already running" in status:
            continue  # not started by this `up`
        for dep in deps.get(name, []):
            if dep in ready_at and started < ready_at[dep] - 0.5:
                problems.append(f"{name} started {ready_at[dep] - started:.1f} s before its "
                                f"dependency {dep} was ready")
    print(f"  {'service':<16} {'started':>8} {'ready':>8}   state")
    for ready, name, started, status in sorted(rows):
        print(f"  {name:<16} {started - args.since:7.1f}s {ready - args.since:7.1f}s   {status}")
    total = max(r[0] for r in rows) - args.since
    for p in problems:
        print(f"wait: order: {p}", file=sys.stderr)
    print(f"all {len(rows)} services ready {total:.1f} s after `up`"
          + (", each started after its dependencies were ready" if deps and not problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
