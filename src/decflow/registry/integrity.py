"""What makes a registered model trustworthy to load: the sha256 manifest of its files written
when it is logged, the manifest's own digest recorded on the version, and the check of a
downloaded model directory against both before anything of it is read
(``decflow.errors.ModelIntegrityError`` naming the file otherwise)."""

import hashlib
import json
import tempfile
from pathlib import Path

import mlflow.artifacts
from mlflow.exceptions import MlflowException

from decflow.errors import ModelIntegrityError
from decflow.registry.client import service_guard
from decflow.registry.names import Tag

# The sha256 of every file of a logged model, and where the manifest's own digest is kept.
MANIFEST = "decflow-manifest.json"
MANIFEST_TAG = "decflow.manifest_sha256"
# When a version registered without a manifest was adopted (``decflow adopt``).
ADOPTED_TAG = Tag.MANIFEST_ADOPTED_AT
_MLFLOW_META = "registered_model_meta"  # written by MLflow's models:/ downloads


def write_manifest(root: Path) -> str:
    """Write ``root/decflow-manifest.json``: ``{"algorithm": "sha256", "files": {path: hex}}``
    for every file under ``root`` (posix paths relative to it). Returns the manifest's sha256."""
    root = Path(root)
    files = {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*"))
             if p.is_file() and p.relative_to(root).as_posix() != MANIFEST}
    data = json.dumps({"algorithm": "sha256", "files": files}, indent=1,
                      sort_keys=True).encode()
    (root / MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def verify_model_dir(root: Path, manifest_sha256: str | None, what: str) -> None:
    """Check every file under ``root`` against the manifest whose sha256 was recorded at
    registration; nothing under ``root`` is read as a model before this passes.

    What MLflow and Python write into a model directory loaded in place (a local artifact
    store loaded with ``mlflow.pyfunc.load_model("models:/...")``), ``registered_model_meta``
    and ``__pycache__/``, is not part of the model: it is deleted from this copy first, so no
    stored bytecode can stand in for the checked sources.

    Args:
        root: a downloaded model directory (a copy: byproducts are deleted from it).
        manifest_sha256: the version's ``decflow.manifest_sha256`` tag.
        what: names the model in messages, e.g. ``model 'tiny' version 3``.

    Raises:
        ModelIntegrityError: no digest recorded; the manifest, or a file, differs from its
            digest; a file is missing or not in the manifest. The message names the file.
    """
    root = Path(root)
    for path in sorted(root.rglob("*"), reverse=True):
        rel = path.relative_to(root)
        if "__pycache__" not in rel.parts and rel.as_posix() != _MLFLOW_META:
            continue
        if path.is_dir() and not path.is_symlink():
            path.rmdir()  # its files came first (reverse order)
        else:
            path.unlink()
    if not manifest_sha256:
        raise ModelIntegrityError(
            f"{what} has no {MANIFEST_TAG} tag (registered without a content digest, before "
            f"decflow recorded them): refusing to load it; if its files are the ones you "
            f"registered, `decflow adopt --model <N>` records their digest now, else "
            f"register the model again with decflow")
    if not (root / MANIFEST).is_file():
        raise ModelIntegrityError(f"{what}: file {MANIFEST} recorded at registration is "
                                  f"missing from the artifact store: refusing to load it")
    got = _sha256(root / MANIFEST)
    if got != manifest_sha256:
        raise ModelIntegrityError(
            f"{what}: file {MANIFEST} has sha256 {got}, but the version's tag {MANIFEST_TAG} "
            f"says {manifest_sha256}: the model's files were changed after registration; "
            f"refusing to load them")
    expected = json.loads((root / MANIFEST).read_bytes())["files"]
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for rel, want in sorted(expected.items()):
        if rel not in present:
            raise ModelIntegrityError(f"{what}: file {rel} recorded at registration is missing "
                                      f"from the artifact store: refusing to load it")
        got = _sha256(root / rel)
        if got != want:
            raise ModelIntegrityError(
                f"{what}: file {rel} has sha256 {got}, but the manifest recorded at "
                f"registration says {want}: it was changed after registration; refusing to "
                f"load it")
    extra = sorted(present - set(expected) - {MANIFEST})
    if extra:
        raise ModelIntegrityError(f"{what}: file {extra[0]} is not in the manifest recorded at "
                                  f"registration (added later; {len(extra)} such file(s)): "
                                  f"refusing to load it")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stored_manifest_digest(tracking_uri: str, source: str) -> str:
    """sha256 of the manifest stored with a model that has no LoggedModel digest tag."""
    with tempfile.TemporaryDirectory(prefix="decflow-manifest-") as tmp:
        try:
            with service_guard(tracking_uri):
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source.rstrip('/')}/{MANIFEST}", dst_path=tmp,
                    tracking_uri=tracking_uri)
        except (MlflowException, OSError) as exc:
            raise ValueError(f"{source} has no {MANIFEST} ({exc}): log the model with "
                             f"decflow.registry.packaging.log_model, which records its file digests"
                             ) from exc
        return _sha256(Path(path))
