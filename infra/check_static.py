"""Static checks of infra/ that need no Docker daemon and no cluster (run by infra/check.sh).

    .venv/bin/python infra/check_static.py

1. Every YAML file under infra/ parses, and every document in it is a mapping (compose files,
   Helm values files, Kubernetes manifests, the pipeline config fragment).
2. The compose file: bind-mount sources, build context and Dockerfile exist; every service
   that stays up has a healthcheck; every depends_on waits on a condition; every secret-looking
   environment value (and the password of every URL) is a required `${VAR:?...}` reference.
3. No committed file under infra/ holds a secret: no AWS key ids or private keys; in
   .env.example every password/secret is a `change-me` placeholder; in the Helm values and
   manifests no password/secret field has a value and no URL carries credentials.
4. The Helm values files name existing Secrets for credentials (never inline values).
5. infra/pipeline.compose.yaml is a valid PipelineConfig (decflow.config.load_config).
6. infra/.env is ignored by git.
7. The decflow image tag is the package version (pyproject.toml): the compose file's default
   (`${STACK_IMAGE:-decflow:<version>}`) and the image tags of the Kubernetes manifests and Helm
   values, and the Dockerfile's `ARG DECFLOW_VERSION` (the image's version label); the public
   images of PostgreSQL and SeaweedFS are the defaults of variables
   (`${STACK_POSTGRES_IMAGE:-postgres:16}`), so a machine without Docker Hub can swap in its own,
   and are pinned: a tag other than `latest`, or a digest (`image:tag@sha256:...`).
Prints one line per failure and exits 1 when there is any.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parent
ROOT = INFRA.parent
COMPOSE = INFRA / "docker-compose.yml"
ONE_SHOT = {"create-buckets"}  # services that run to completion (no healthcheck)
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$|ACCESS_KEY)", re.I)
REQUIRED_REF = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]*\}$")
URL_CREDENTIALS = re.compile(r"://(?P<user>[^/\s:@'\"]+):(?P<password>[^@\s'\"]+)@")
SECRET_VALUE_KEYS = re.compile(r"^(password|adminPassword|rootPassword|secretKey|"
                               r"awsSecretAccessKey|awsAccessKeyId|accessKey|authString|"
                               r"connectionString|clientSecret|cookieSecret|"
                               r"flaskServerSecretKey)$")
TEXT_SECRETS = [
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), "a GitHub token"),
]

problems: list[str] = []


def fail(where: Path | str, message: str) -> None:
    where = where.relative_to(ROOT) if isinstance(where, Path) else where
    problems.append(f"{where}: {message}")


def infra_files() -> list[Path]:
    """Files under infra/ that could be committed (not ignored by git; infra/.env never)."""
    files = [p for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--stdin"],
                             input="\n".join(str(p.relative_to(ROOT)) for p in files),
                             capture_output=True, text=True).stdout
        ignored = {ROOT / line for line in out.splitlines() if line}
    except FileNotFoundError:  # no git: still never scan a real .env
        ignored = set()
    return [p for p in files if p not in ignored and p.name != ".env"]


def check_yaml(files: list[Path]) -> dict[Path, list]:
    docs = {}
    for path in files:
        if path.suffix not in (".yaml", ".yml"):
            continue
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            fail(path, f"does not parse: {exc}")
            continue
        if not loaded:
            fail(path, "is empty")
        for n, doc in enumerate(loaded):
            if not isinstance(doc, dict):
                fail(path, f"document {n} is a {type(doc).__name__}, not a mapping")
        docs[path] = loaded
    return docs


def walk(node, path=()):
    """(path, value) of every scalar in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, path + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (str(i),))
    else:
        yield path, node


def check_compose(compose: dict) -> None:
    services = compose.get("services") or {}
    if not services:
        fail(COMPOSE, "no services")
    for name, svc in services.items():
        where = f"infra/docker-compose.yml: services.{name}"
        build = svc.get("build")
        if isinstance(build, dict):
            context = (INFRA / build.get("context", ".")).resolve()
            if not context.is_dir():
                problems.append(f"{where}: build context {context} is not a folder")
            elif not (context / build.get("dockerfile", "Dockerfile")).is_file():
                problems.append(f"{where}: no Dockerfile {build.get('dockerfile')}")
        for volume in svc.get("volumes") or []:
            source = (volume.split(":")[0] if isinstance(volume, str)
                      else volume.get("source", ""))
            if source.startswith((".", "/")) and not (INFRA / source).exists():
                problems.append(f"{where}: bind-mount source {source} does not exist")
        if name not in ONE_SHOT and "healthcheck" not in svc:
            problems.append(f"{where}: a long-running service without a healthcheck")
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list) or any("condition" not in (d or {}) for d in depends.values()):
            problems.append(f"{where}: depends_on without a condition (use service_healthy)")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            problems.append(f"{where}: environment as a list; use a mapping")
            env = {}
        for key, value in env.items():
            value = "" if value is None else str(value)
            if SECRET_NAME.search(key) and not REQUIRED_REF.match(value):
                problems.append(f"{where}: {key} must be a required reference ${{VAR:?...}}, "
                                f"not {value!r}")
    for path, value in walk(compose):
        if isinstance(value, str):
            for m in URL_CREDENTIALS.finditer(value):
                if not REQUIRED_REF.match(m["password"]):
                    problems.append(f"infra/docker-compose.yml: {'.'.join(path)}: URL password "
                                    f"must be a required reference ${{VAR:?...}}")


def check_env_example(path: Path) -> None:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            fail(path, f"line {n}: not KEY=value")
        elif SECRET_NAME.search(key) and key != "S3_ACCESS_KEY" and "change-me" not in value:
            fail(path, f"line {n}: {key} must be a change-me placeholder, not a value")


def check_k8s(path: Path, docs: list) -> None:
    for doc in docs:
        for keys, value in walk(doc):
            if not keys or value in (None, "", [], {}):
                continue
            if SECRET_VALUE_KEYS.match(keys[-1]) and isinstance(value, str):
                fail(path, f"{'.'.join(keys)} holds a value: reference an existing Secret")
            if isinstance(value, str) and URL_CREDENTIALS.search(value):
                fail(path, f"{'.'.join(keys)} is a URL with credentials")
    if path.name.endswith(".values.yaml"):
        text = path.read_text()
        if "existingSecret" not in text and "Secrets" not in text and "secretRef" not in text \
                and path.name != "dask-operator.values.yaml":
            fail(path, "names no existing Secret for its credentials")


def check_text(files: list[Path]) -> None:
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for pattern, what in TEXT_SECRETS:
            if pattern.search(text):
                fail(path, f"looks like it holds {what}")


def check_pipeline_fragment(path: Path) -> None:
    try:
        from decflow.config import load_config
    except ImportError as exc:
        fail(path, f"cannot import decflow to validate it ({exc}); run with the project venv")
        return
    try:
        load_config(path, env={})
    except ValueError as exc:
        fail(path, f"is not a valid pipeline config: {exc}")


def check_image_tags(compose: dict, docs: dict[Path, list]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    services = compose.get("services") or {}
    expected = {"mlflow-postgres": ("STACK_POSTGRES_IMAGE", None),
                "prefect-postgres": ("STACK_POSTGRES_IMAGE", None),
                "seaweedfs": ("STACK_SEAWEEDFS_IMAGE", None),
                "mlflow": ("STACK_IMAGE", f"decflow:{version}")}
    for name, (var, default) in expected.items():
        image = str((services.get(name) or {}).get("image", ""))
        m = re.fullmatch(r"\$\{(\w+):-([^}]+)\}", image)
        if not m or m[1] != var:
            fail(COMPOSE, f"services.{name}.image must be ${{{var}:-<default image>}}, "
                          f"not {image!r}")
        elif default and m[2] != default:
            fail(COMPOSE, f"services.{name}.image defaults to {m[2]}, not {default} "
                          f"(the package version of pyproject.toml)")
        elif not default and not re.fullmatch(r"[^@]*/?[^/@:]+:(?!latest(@|$))[\w.-]+"
                                               r"(@sha256:[0-9a-f]{64})?|[^@]+@sha256:[0-9a-f]{64}",
                                               m[2]):
            fail(COMPOSE, f"services.{name}.image defaults to {m[2]}: pin a tag other than "
                          f"latest, or a digest")
    arg = re.search(r"^ARG DECFLOW_VERSION=(\S+)$", (INFRA / "Dockerfile").read_text(), re.M)
    if not arg or arg[1] != version:
        fail(INFRA / "Dockerfile", f"ARG DECFLOW_VERSION={arg[1] if arg else '(none)'}, not the "
                                   f"package version {version}")
    for path, loaded in docs.items():
        if INFRA / "k8s" not in path.parents:
            continue
        for doc in loaded:
            for keys, value in walk(doc):
                if not isinstance(value, str):
                    continue
                tag = None
                if keys and keys[-1] == "image" and "/decflow:" in value:
                    tag = value.rsplit(":", 1)[1]
                elif keys[-2:] in (("image", "tag"), ("image", "prefectTag")) and \
                        str(_get(doc, keys[:-1] + ("repository",))).endswith("/decflow"):
                    tag = value
                if tag is not None and tag != version:
                    fail(path, f"{'.'.join(keys)}: decflow image tag {tag}, not the package "
                               f"version {version}")


def _get(node, keys):
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def check_env_ignored() -> None:
    rc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "infra/.env"]).returncode
    if rc != 0:
        problems.append("infra/.env is not ignored by git: add it to .gitignore")


def main() -> int:
    files = infra_files()
    docs = check_yaml(files)
    if COMPOSE in docs and docs[COMPOSE]:
        check_compose(docs[COMPOSE][0])
        check_image_tags(docs[COMPOSE][0], docs)
    else:
        fail(COMPOSE, "missing")
    check_env_example(INFRA / ".env.example")
    for path, loaded in docs.items():
        if INFRA / "k8s" in path.parents:
            check_k8s(path, loaded)
    check_text(files)
    check_pipeline_fragment(INFRA / "pipeline.compose.yaml")
    check_env_ignored()
    for p in problems:
        print(f"static: {p}", file=sys.stderr)
    yamls = sum(1 for p in docs)
    if not problems:
        print(f"static: {yamls} YAML files parse as mappings; compose healthchecks, conditions "
              f"and secret references; image tags; no secrets in {len(files)} files; pipeline "
              f"fragment valid")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
