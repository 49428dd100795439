"""Create the stack's S3 buckets if they are missing (idempotent; the one-shot `create-buckets`
service of infra/docker-compose.yml runs it with the project image, which has boto3).

Environment: AWS_ENDPOINT_URL (e.g. http://seaweedfs:8333), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, S3_BUCKETS (comma-separated, default "mlflow,decflow").
Exits non-zero when a bucket can be neither found nor created (bad keys, unreachable endpoint).
"""

import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError


def main() -> int:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    buckets = [b.strip() for b in os.environ.get("S3_BUCKETS", "mlflow,decflow").split(",")
               if b.strip()]
    s3 = boto3.client("s3", endpoint_url=endpoint,
                      region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                      config=Config(s3={"addressing_style": "path"},
                                    retries={"max_attempts": 5, "mode": "standard"}))
    for attempt in range(30):  # the S3 port can answer a moment after the health check
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except EndpointConnectionError:
            time.sleep(2)
    else:
        print(f"create-buckets: {endpoint} does not answer", file=sys.stderr)
        return 1
    for bucket in buckets:
        if bucket in existing:
            print(f"create-buckets: s3://{bucket} exists")
            continue
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",
                                                     "BucketAlreadyExists"):
                raise
        print(f"create-buckets: s3://{bucket} created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
