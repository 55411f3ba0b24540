#!/usr/bin/env bash
# mastomedia in five minutes, on a local fake Mastodon: `bash scripts/demo.sh`
#
# What it does (idempotent; run it as often as you like):
#   1. scripts/services.sh: PostgreSQL on 127.0.0.1:5432 and the moto venv (installs them
#      on a fresh Debian machine; needs root).
#   2. cargo build --locked (debug build).
#   3. Starts a local S3 server (tests/support/s3server.py: moto behind a SigV4-checking
#      proxy) in the background; it is stopped when this script exits.
#   4. (Re)creates the database mastomedia_demo from tests/fixtures/mastodon-4.6.sql, sets
#      the instance's media cache retention to 14 days, and seeds ~3000 media rows,
#      accounts, emoji, preview cards and their objects (scripts/seed.py) into the bucket
#      mastomedia-demo.
#   5. Writes demo/.env.production and runs: prune --dry-run, prune, prune again; then
#      du, orphans (report, then --delete), and migrate of the bucket into a second one
#      (with --verify), twice (the second run uploads nothing); then a cache budget run
#      (prune --max-cache-size) with du after it, and reconcile (report, then --apply).
#
# DEMO_KEEP=1 bash scripts/demo.sh leaves the S3 server running and prints how to use it.
# DEMO_MEDIA (default 3000) and DEMO_SEED (default 1) change the seeded data.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO_DIR=$ROOT/demo
DB_NAME=mastomedia_demo
BUCKET=mastomedia-demo
MEDIA=${DEMO_MEDIA:-3000}
SEED=${DEMO_SEED:-1}
BIN=target/debug/mastomedia

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
# Echo a command, then run it.
run() {
    printf '\n$ %s\n' "$*"
    "$@"
}

say "services (PostgreSQL, moto venv)"
# shellcheck source=scripts/services.sh
source scripts/services.sh
PY=$MASTOMEDIA_TEST_PYTHON
PG_BASE=${MASTOMEDIA_TEST_DATABASE_URL%/*}
DB_URL=$PG_BASE/$DB_NAME

say "build"
run cargo build --locked

mkdir -p "$DEMO_DIR"

# A server left running by an earlier DEMO_KEEP=1 run: stop it (only if it is ours).
if [ -f "$DEMO_DIR/s3server.pid" ]; then
    old=$(cat "$DEMO_DIR/s3server.pid")
    if [ -n "$old" ] && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q 's3server.py'; then
        echo "stopping the S3 server of an earlier demo run (pid $old)"
        kill "$old" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$DEMO_DIR/s3server.pid"
fi

say "local S3 server"
rm -f "$DEMO_DIR/s3server.json"
printf '\n$ %s\n' "$PY tests/support/s3server.py --no-stdin-watch --port-file demo/s3server.json &"
"$PY" tests/support/s3server.py --no-stdin-watch --port-file "$DEMO_DIR/s3server.json" \
    >"$DEMO_DIR/s3server.log" 2>&1 &
S3_PID=$!
echo "$S3_PID" >"$DEMO_DIR/s3server.pid"
cleanup() {
    if [ "${DEMO_KEEP:-0}" != 1 ] && kill -0 "$S3_PID" 2>/dev/null; then
        kill "$S3_PID" 2>/dev/null || true
        rm -f "$DEMO_DIR/s3server.pid" "$DEMO_DIR/s3server.json"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 100); do
    [ -s "$DEMO_DIR/s3server.json" ] && break
    if ! kill -0 "$S3_PID" 2>/dev/null; then
        echo "the S3 server exited; its log:" >&2
        cat "$DEMO_DIR/s3server.log" >&2
        exit 1
    fi
    sleep 0.2
done
if [ ! -s "$DEMO_DIR/s3server.json" ]; then
    echo "the S3 server did not start within 20 s; log in demo/s3server.log" >&2
    exit 1
fi
json_field() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
MOTO=$(json_field "$DEMO_DIR/s3server.json" moto)
PROXY=$(json_field "$DEMO_DIR/s3server.json" proxy)
echo "moto (seeding, no auth check): $MOTO   proxy (what mastomedia talks to): $PROXY"

say "database $DB_NAME"
run psql "$PG_BASE/postgres" -Xq -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME"
run psql "$DB_URL" -Xq -v ON_ERROR_STOP=1 -f tests/fixtures/mastodon-4.6.sql
# Admin > Server settings > Content retention > "Media cache retention period": 14 days.
run psql "$DB_URL" -Xq -v ON_ERROR_STOP=1 -c \
    "INSERT INTO settings (var, value, created_at, updated_at) VALUES ('media_cache_retention_period', E'--- 14\n', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')"

say "seed rows and objects"
run "$PY" scripts/seed.py --database-url "$DB_URL" --endpoint "$MOTO" --bucket "$BUCKET" \
    --create-bucket --media "$MEDIA" --seed "$SEED" --days 14 --quiet

cat >"$DEMO_DIR/.env.production" <<EOF
# Written by scripts/demo.sh: a Mastodon-style env file for the demo instance.
LOCAL_DOMAIN=example.social
DATABASE_URL=$DB_URL
S3_ENABLED=true
S3_BUCKET=$BUCKET
S3_REGION=us-east-1
S3_ENDPOINT=$PROXY
S3_PROTOCOL=http
AWS_ACCESS_KEY_ID=mastomedia-test
AWS_SECRET_ACCESS_KEY=mastomedia-test-secret
EOF
echo
echo "wrote demo/.env.production (S3_ENDPOINT=$PROXY, DATABASE_URL=$DB_URL)"

MEDIA_SQL="SELECT CASE WHEN remote_url = '' THEN 'local upload' ELSE 'remote' END AS origin,
       CASE WHEN created_at <= (now() AT TIME ZONE 'UTC') - interval '14 days' THEN 'older than 14d' ELSE 'newer' END AS age,
       count(*) AS rows,
       count(file_file_name) AS with_file,
       count(thumbnail_file_name) AS with_thumbnail
  FROM media_attachments GROUP BY 1, 2 ORDER BY 1, 2"
BUCKET_PY='
import sys, collections, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret")
counts = collections.Counter()
for page in c.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
    for o in page.get("Contents", []):
        parts = o["Key"].split("/")
        top = "/".join(parts[:3] if parts[0] == "cache" else parts[:2]) if len(parts) > 2 else "(other)"
        counts[top] += 1
print("objects in s3://%s: %d" % (sys.argv[2], sum(counts.values())))
for k, v in sorted(counts.items()):
    print("  %-34s %6d" % (k, v))
'
show_state() {
    run psql "$DB_URL" -X -P footer=off -c "$MEDIA_SQL"
    printf '\n$ %s\n' "(list the bucket, counting keys per prefix)"
    "$PY" -c "$BUCKET_PY" "$MOTO" "$BUCKET"
}

say "before"
show_state

prune() {
    local rc=0
    run "$BIN" --env-file demo/.env.production prune "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "(mastomedia exited with $rc)"
        PRUNE_FAILED=1
    fi
}
PRUNE_FAILED=0

say "1. dry run: what would go (nothing is changed)"
prune --dry-run
say "2. prune for real"
prune
say "3. prune again: nothing left to do"
prune

say "after"
show_state
echo
echo "Local uploads, newer remote media, avatars, emoji, preview cards, site uploads and"
echo "orphans are untouched; remote media older than the 14-day retention lost its files,"
echo "and Mastodon would re-fetch it through /media_proxy when viewed."

# Exit codes of the read-only and copy steps are collected like prune's.
step() {
    local rc=0
    run "$BIN" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "(mastomedia exited with $rc)"
        PRUNE_FAILED=1
    fi
}

say "4. du: what is in the bucket, beside what the database believes"
step --env-file demo/.env.production du
say "5. orphans: objects no row refers to (report only)"
step --env-file demo/.env.production orphans
say "6. orphans --delete (the seeded orphans are minutes old, so --min-age 0)"
step --env-file demo/.env.production orphans --delete --min-age 0

say "7. migrate: copy the bucket to another provider's bucket (here: a second bucket)"
"$PY" - "$MOTO" "$BUCKET-copy" <<'PYEOF'
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret")
b = sys.argv[2]
try:
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=b):
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            c.delete_objects(Bucket=b, Delete={"Objects": objs})
except c.exceptions.NoSuchBucket:
    c.create_bucket(Bucket=b)
PYEOF
sed "s/^S3_BUCKET=.*/S3_BUCKET=$BUCKET-copy/" "$DEMO_DIR/.env.production" >"$DEMO_DIR/.env.copy"
rm -f "$DEMO_DIR"/migrate.sqlite*
step --env-file demo/.env.copy migrate --from-env demo/.env.production --journal demo/migrate.sqlite --verify
say "8. migrate again: the journal says everything is there, nothing is uploaded"
step --env-file demo/.env.copy migrate --from-env demo/.env.production --journal demo/migrate.sqlite

say "9. prune --max-cache-size: the cache down to 20 MiB, oldest first across kinds"
step --env-file demo/.env.production prune --max-cache-size 20MiB --keep-interacted --prune-profiles --preview-cards
say "10. du after the budget run"
step --env-file demo/.env.production du
say "11. reconcile: rows whose file is missing (the seed leaves some small styles missing)"
step --env-file demo/.env.production reconcile
step --env-file demo/.env.production reconcile --apply

if [ "${DEMO_KEEP:-0}" = 1 ]; then
    say "the S3 server keeps running (DEMO_KEEP=1)"
    cat <<EOF
S3 server pid $S3_PID (moto $MOTO, proxy $PROXY); database $DB_URL.
Try, from $ROOT:
  $BIN --env-file demo/.env.production prune --dry-run --prune-profiles --preview-cards
  $BIN --env-file demo/.env.production prune --days 3 --json
  curl -s $PROXY/__stats/$BUCKET        # requests the proxy saw
  psql $DB_URL
Stop it with:  kill $S3_PID      (or just run scripts/demo.sh again)
EOF
fi
[ "$PRUNE_FAILED" = 0 ]
