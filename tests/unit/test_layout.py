"""The layout is the architecture: imports go one way, between the layers (library <- tasks <- flows)
and between the library's subpackages, and every package folder is installed."""

import ast
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "decflow"
# The library's subpackages, each allowed to import only the ones of a lower rank (and the
# top-level modules: errors, locks, files, redaction, environment). Same rank: independent of
# each other. config (rank 0) is what every layer reads.
RANK = {"config": 0, "model": 1, "data": 1, "engine": 2, "registry": 2, "insight": 3}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, also those inside functions; ``from x
    import y`` gives ``x.y`` (y may be a module or a name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def subpackage(module: str) -> str | None:
    """``decflow.engine.partitions.x`` -> ``engine``; top-level modules -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in RANK else None


def library_modules():
    return sorted(SRC.rglob("*.py"))


def test_every_library_folder_is_a_ranked_subpackage():
    folders = {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(RANK)
    assert all((SRC / name / "__init__.py").is_file() for name in RANK)


def test_library_imports_go_one_way_between_subpackages():
    offenders = []
    for path in library_modules():
        here = path.relative_to(SRC).parts[0] if len(path.relative_to(SRC).parts) > 1 else None
        for line, module in imports(path):
            if module.startswith("."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} relative import {module}")
                continue
            if (module.split(".")[0] in {"tasks", "flows", "prefect"}
                    or module.split(".")[:2] in (["decflow", "tasks"], ["decflow", "flows"])):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
                continue
            if not module.startswith("decflow."):
                continue
            there = subpackage(module)
            if there is None or there == here:
                continue
            if path == SRC / "__init__.py":
                continue  # the package's face: ``from decflow import DeepEmbeddedClustering``
            if here is None or RANK[there] >= RANK[here]:
                offenders.append(f"{path.relative_to(ROOT)}:{line} ({here or 'top level'}) "
                                 f"imports {module} ({there})")
    assert offenders == []


def test_tasks_never_import_flows():
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {m}"
                 for p in sorted((ROOT / "tasks").rglob("*.py")) for line, m in imports(p)
                 if m.split(".")[:2] == ["decflow", "flows"] or m.split(".")[0] == "flows"]
    assert offenders == []


def test_flows_folder_holds_flows_and_their_command_line_only():
    """Every module under flows/ defines a Prefect flow, except the CLI, the deployments'
    definitions that serve them and the server's automations that watch them (notifications,
    dead runs); plain helpers live in the library."""
    allowed = {"__init__", "cli", "deployments", "notifications"}
    plain = [p.name for p in sorted((ROOT / "flows").glob("*.py"))
             if p.stem not in allowed and "@flow" not in p.read_text()]
    assert plain == []


def test_every_package_folder_is_installed():
    """A folder missing from pyproject's list works in an editable install and is absent from
    a wheel (the container image): the list and the folders agree. The layers' folders tasks/
    and flows/ install as decflow.tasks and decflow.flows, never as top-level packages."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    assert config["package-dir"] == {"": "src", "decflow.tasks": "tasks",
                                     "decflow.flows": "flows"}
    on_disk = {".".join(p.parent.relative_to(SRC.parent).parts)
               for p in SRC.rglob("__init__.py")}
    for layer in ("tasks", "flows"):
        on_disk |= {".".join(("decflow", *p.parent.relative_to(ROOT).parts))
                    for p in (ROOT / layer).rglob("__init__.py")}
    assert declared == on_disk


def test_every_mlflow_client_is_the_bounded_one():
    """MLflow is reached only through ``decflow.registry.client.mlflow_client``, whose calls
    give up within the HTTP budget and say which server did not answer; a plain
    ``MlflowClient`` would wait minutes per call for a server that is down."""
    allowed = SRC / "registry" / "client.py"
    offenders = []
    for path in [*library_modules(), *sorted((ROOT / "tasks").rglob("*.py")),
                 *sorted((ROOT / "flows").rglob("*.py"))]:
        if path == allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if name == "MlflowClient":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_importing_decflow_or_its_command_line_does_not_load_torch():
    """``decflow --help``, a CLI start and a validation-only Dask worker import ``decflow``
    without paying for torch (seconds); the estimator loads it on first use."""
    import subprocess
    import sys

    code = ("import sys, decflow, decflow.flows.cli.app, decflow.config; "
            "assert 'torch' not in sys.modules, 'torch loaded'; "
            "from decflow import DeepEmbeddedClustering, DegenerateClusterWarning; "
            "assert 'torch' in sys.modules and DeepEmbeddedClustering.__name__ == "
            "'DeepEmbeddedClustering'; "
            "import pytest; pytest.raises(AttributeError, getattr, decflow, 'Nope')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_score_command_s_process_loads_neither_torch_nor_scikit_learn():
    """`decflow score` and backfill ship the registered files to the workers that score
    (``registry.versions.load_files``): their own process imports the flow, the model check
    and the engine without torch or scikit-learn (about 3 s of CPU on two cores, while the
    workers start beside it)."""
    import subprocess
    import sys

    code = ("import sys, decflow.flows.cli.nightly, decflow.flows.score, "
            "decflow.registry.versions, decflow.engine.payload; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
