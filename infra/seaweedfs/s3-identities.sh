#!/bin/sh
# Writes SeaweedFS's S3 identities file from the environment, then runs the given command.
#   S3_ACCESS_KEY, S3_SECRET_KEY  the one identity of the stack (admin: creates the buckets,
#                                  reads and writes objects); required, no default
#   S3_CONFIG_PATH                 where to write it (default /tmp/s3.json, inside the container)
# Used as the entrypoint of the seaweedfs service (infra/docker-compose.yml):
#   s3-identities.sh /entrypoint.sh server -s3 -s3.config=/tmp/s3.json ...
# The keys never touch a committed file; the file is readable by its owner only.
set -eu

: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY (infra/.env)}"
: "${S3_SECRET_KEY:?set S3_SECRET_KEY (infra/.env)}"
out="${S3_CONFIG_PATH:-/tmp/s3.json}"

# Keys are written into JSON as they are: allow only characters that need no escaping.
for key in "$S3_ACCESS_KEY" "$S3_SECRET_KEY"; do
  case "$key" in
    *[!A-Za-z0-9._~+=/-]*) echo "s3-identities: keys may hold only A-Z a-z 0-9 . _ ~ + = / -" >&2
                          exit 64 ;;
  esac
done
if [ "${#S3_SECRET_KEY}" -lt 16 ]; then
  echo "s3-identities: S3_SECRET_KEY is shorter than 16 characters" >&2
  exit 64
fi

umask 077
cat > "$out" <<JSON
{
  "identities": [
    {
      "name": "decflow",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON
# The image's /entrypoint.sh drops from root to its `seaweed` user: hand the file over.
if [ "$(id -u)" = "0" ] && id seaweed >/dev/null 2>&1; then
  chown seaweed "$out"
fi
exec "$@"
