"""Copy the stack's S3 buckets to a folder and back (run by backup.sh and restore.sh inside a
one-off container of the decflow image, which has boto3, on the compose network).

    s3_archive.py export DIR BUCKET...   # DIR/BUCKET/KEY for every object; DIR/s3.json counts
    s3_archive.py import DIR BUCKET...   # empties each bucket (created when missing), uploads
                                         # DIR/BUCKET/**, checks the counts against DIR/s3.json

Environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the S3 client
environment of infra/docker-compose.yml). An import makes each bucket hold exactly what the
folder holds: objects written after the backup are deleted. Exit 1 with a message on a
mismatch; boto3 raises on an S3 error.
"""

import json
import os
import sys
from pathlib import Path, PurePosixPath

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

TRANSFER = TransferConfig(max_concurrency=4)


def client():
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 5, "mode": "standard"}))


def objects(s3, bucket: str):
    """(key, size) of every object; keys ending in / are folder markers and carry no data."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            if not o["Key"].endswith("/"):
                yield o["Key"], o["Size"]


def local_path(root: Path, bucket: str, key: str) -> Path:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or ".." in parts:
        raise ValueError(f"s3://{bucket}/{key}: a key that is no relative path")
    return root / bucket / Path(*parts)


def export(root: Path, buckets: list[str]) -> dict:
    s3 = client()
    counts = {}
    for bucket in buckets:
        n = size = 0
        for key, nbytes in objects(s3, bucket):
            path = local_path(root, bucket, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(path), Config=TRANSFER)
            if path.stat().st_size != nbytes:
                raise SystemExit(f"s3://{bucket}/{key}: {path.stat().st_size} bytes read, "
                                 f"{nbytes} listed")
            n, size = n + 1, size + nbytes
        counts[bucket] = {"objects": n, "bytes": size}
        print(f"s3_archive: s3://{bucket}: {n} objects, {size} bytes")
    (root / "s3.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def empty(s3, bucket: str) -> int:
    keys = [k for k, _ in objects(s3, bucket)]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    return len(keys)


def import_(root: Path, buckets: list[str]) -> int:
    expected = json.loads((root / "s3.json").read_text())
    s3 = client()
    bad = []
    for bucket in buckets:
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            s3.create_bucket(Bucket=bucket)
        removed = empty(s3, bucket)
        n = size = 0
        base = root / bucket
        for path in sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []:
            key = path.relative_to(base).as_posix()
            s3.upload_file(str(path), bucket, key, Config=TRANSFER)
            n, size = n + 1, size + path.stat().st_size
        now = {"objects": 0, "bytes": 0}
        for _, nbytes in objects(s3, bucket):
            now["objects"] += 1
            now["bytes"] += nbytes
        want = expected.get(bucket, {"objects": 0, "bytes": 0})
        print(f"s3_archive: s3://{bucket}: {removed} objects removed, {n} uploaded "
              f"({size} bytes); the bucket holds {now['objects']} objects, {now['bytes']} bytes")
        if now != want:
            bad.append(f"s3://{bucket} holds {now}, the backup {want}")
    for b in bad:
        print(f"s3_archive: {b}", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("export", "import"):
        print(__doc__, file=sys.stderr)
        return 2
    root, buckets = Path(argv[1]), argv[2:]
    if argv[0] == "export":
        export(root, buckets)
        return 0
    return import_(root, buckets)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
