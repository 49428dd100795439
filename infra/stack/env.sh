#!/usr/bin/env bash
# Creates infra/.env from infra/.env.example with a fresh random value for every change-me
# secret (48 hex characters: URL- and JSON-safe), mode 600, when it does not exist yet; an
# existing file is never rewritten (the database passwords are fixed on the first start of the
# postgres volume). Refuses an existing file that still holds a change-me placeholder.
#   infra/stack/env.sh [ENV_FILE]       # default infra/.env
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
env_file="${1:-$root/infra/.env}"
example="$root/infra/.env.example"

if [ -f "$env_file" ]; then
  if grep -q '^[A-Z0-9_]*=change-me' "$env_file"; then
    echo "env.sh: $env_file still holds change-me placeholders:" >&2
    grep -o '^[A-Z0-9_]*=change-me' "$env_file" | cut -d= -f1 | sed 's/^/  /' >&2
    exit 1
  fi
  echo "env.sh: using the existing $env_file"
  exit 0
fi
umask 077
tmp="$(mktemp "$env_file.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    [A-Z]*=change-me*)
      printf '%s=%s\n' "${line%%=*}" "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" ;;
    *) printf '%s\n' "$line" ;;
  esac
done < "$example" > "$tmp"
mv "$tmp" "$env_file"
trap - EXIT
echo "env.sh: wrote $env_file (mode 600) with random secrets:" \
  "$(grep -o '^[A-Z0-9_]*=' "$example" | tr -d = | while read -r k; do
       grep -q "^$k=change-me" "$example" && printf '%s ' "$k"; done)"
