"""The stack's S3 (SeaweedFS) on a small disk: both buckets take objects with 4 GiB free.

SeaweedFS gives a server as many volume slots as its free disk holds volumes (1 GiB each in
the stack) and, left to its defaults, adds 7 volumes at a time to a bucket that has none: the
first bucket took every slot of a 4 GiB disk and the second bucket's first write failed with
an S3 InternalError (on a CI machine with 14 GB free every MLflow artifact upload failed).

The service runs here as the compose file defines it (image, entrypoint, command, settings
files, S3 keys), in a container of its own whose /data is a 4 GiB tmpfs: the stack's own
SeaweedFS keeps its volume and goes on serving the other tests.
"""

import json
import uuid

import boto3
import pytest
import yaml
from botocore.exceptions import BotoCoreError, ClientError

import compose
from story import wait_for

SMALL_DISK = 4 * 2**30
BUCKETS = ("mlflow", "decflow")  # as the stack's create-buckets service makes them


def service_definition(name: str) -> dict:
    """The service as docker-compose resolves it (paths absolute, variables filled in)."""
    return yaml.safe_load(compose.compose("config").stdout)["services"][name]


def bind_mounts(service: dict) -> list[str]:
    """``-v`` arguments of the service's host files (its named volumes left out)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            if v.get("type") != "bind":
                continue
            source, target, ro = v["source"], v["target"], v.get("read_only", False)
        else:
            parts = v.split(":")
            if not parts[0].startswith("/"):
                continue
            source, target, ro = parts[0], parts[1], parts[2:] == ["ro"]
        out += ["-v", f"{source}:{target}" + (":ro" if ro else "")]
    return out


@pytest.fixture()
def small_disk_s3(stack):
    """The seaweedfs service in a container of its own on a 4 GiB /data; yields the boto3
    client of its published S3 port and the container's id; removed after."""
    service = service_definition("seaweedfs")
    env = []
    for key in ("S3_ACCESS_KEY", "S3_SECRET_KEY"):
        env += ["-e", f"{key}={service['environment'][key]}"]
    entrypoint = service["entrypoint"]
    name = f"decflow-small-disk-s3-{uuid.uuid4().hex[:8]}"
    cid = compose.run([
        compose.DOCKER, "run", "-d", "--rm", "--name", name,
        "--hostname", "seaweedfs",  # the command's -ip=seaweedfs: this container itself
        "--tmpfs", f"/data:rw,size={SMALL_DISK},uid=1000,gid=1000,mode=0755",
        "-p", "127.0.0.1::8333", *env, *bind_mounts(service),
        "--entrypoint", entrypoint[0], service["image"], *entrypoint[1:], *service["command"],
    ]).stdout.strip()
    try:
        port = compose.run([compose.DOCKER, "port", cid, "8333/tcp"]).stdout.split(":")[-1]
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port.strip()}",
                          region_name="us-east-1",
                          aws_access_key_id=service["environment"]["S3_ACCESS_KEY"],
                          aws_secret_access_key=service["environment"]["S3_SECRET_KEY"])
        wait_for("the small-disk SeaweedFS's S3 API",
                 lambda: _answers(s3), timeout=120, every=1)
        yield s3, cid
    finally:
        logs = compose.run([compose.DOCKER, "logs", "--tail", "40", cid], check=False)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        compose.run([compose.DOCKER, "rm", "-f", cid], check=False)


def _answers(s3) -> bool:
    try:
        s3.list_buckets()
        return True
    except (BotoCoreError, ClientError):  # not up yet: connection refused, 503 while starting
        return False


def test_both_buckets_take_objects_on_a_4_gib_disk(small_disk_s3):
    """Each bucket of the stack is created and stores and returns an object (the size of a
    small model file) on a disk of 4 GiB; the disk is that small inside the container."""
    s3, cid = small_disk_s3
    df = compose.run([compose.DOCKER, "exec", cid, "df", "-k", "/data"]).stdout
    size_kib = int(df.strip().splitlines()[-1].split()[1])
    assert size_kib * 1024 == pytest.approx(SMALL_DISK, rel=0.01), df
    body = bytes(range(256)) * 4096  # 1 MiB
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="model/weights.bin", Body=body)
        assert s3.get_object(Bucket=bucket, Key="model/weights.bin")["Body"].read() == body
    listed = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert set(BUCKETS) <= listed, json.dumps(sorted(listed))
