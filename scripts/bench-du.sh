#!/usr/bin/env bash
# Benchmark `mastomedia du` against peer tools on the same bucket, through the same
# SigV4-checking proxy of tests/support/s3server.py (moto behind it):
#
#   bash scripts/bench-du.sh                 # 100000 objects
#   BENCH_OBJECTS=20000 bash scripts/bench-du.sh
#
# Seeds BENCH_OBJECTS small objects (16 bytes each, straight to moto, 16 threads) laid out
# like a real instance: remote media under cache/ over two years of snowflake ids (original
# + small), local media, legacy prefix-less media, avatars, headers, preview cards, emoji and
# a few strangers; the database is the empty 4.6 fixture (du's database sums are then 0).
# Then times, one run each:
#   mastomedia du --json                                  (parallel listing, 8 prefixes)
#   aws s3 ls s3://<bucket> --recursive --summarize       (awscli, one sequential listing)
#   rclone size <remote>:<bucket>                         (rclone, when installed)
# and prints wall times and totals. moto answers every listing in time proportional to the
# whole bucket, single-threaded, so it caps any parallel speed-up: read the numbers as
# "requests and overhead", not as what a real provider would show.
# Nothing is written to the repository; scratch files go to a temporary directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${BENCH_OBJECTS:-100000}
DB_NAME=mastomedia_bench_du
BUCKET=mastomedia-bench-du
BIN=target/debug/mastomedia
log() { printf '[bench-du %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# shellcheck source=services.sh
source scripts/services.sh
PY=$MASTOMEDIA_TEST_PYTHON
PG_BASE=${MASTOMEDIA_TEST_DATABASE_URL%/*}
cargo build --locked -q

TMP=$(mktemp -d)
"$PY" tests/support/s3server.py --no-stdin-watch --port-file "$TMP/s3.json" >"$TMP/s3.log" 2>&1 &
S3_PID=$!
trap 'kill $S3_PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 1 100); do [ -s "$TMP/s3.json" ] && break; sleep 0.2; done
MOTO=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["moto"])' "$TMP/s3.json")
PROXY=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxy"])' "$TMP/s3.json")

psql "$PG_BASE/postgres" -Xq -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME"
psql "$PG_BASE/$DB_NAME" -Xq -v ON_ERROR_STOP=1 -f tests/fixtures/mastodon-4.6.sql

log "seeding $N objects into s3://$BUCKET (moto $MOTO)"
"$PY" - "$MOTO" "$BUCKET" "$N" <<'EOF'
import random, sys, threading, queue, time
import boto3
endpoint, bucket, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret")
c.create_bucket(Bucket=bucket)
rng = random.Random(1)
def part(i):
    s = str(i).rjust(9, "0") if len(str(i)) <= 9 else str(i).rjust(12, "0")
    return "/".join(s[j:j + 3] for j in range(0, len(s) - len(s) % 3, 3))
start_id = 109300000000000000          # 2022-11
span = 115700000000000000 - start_id   # to 2025-12
keys = []
while len(keys) < n:
    r = rng.random()
    name = "%016x" % rng.getrandbits(64)
    if r < 0.70:
        p = part(start_id + rng.randrange(span))
        keys += [f"cache/media_attachments/files/{p}/original/{name}.jpg",
                 f"cache/media_attachments/files/{p}/small/{name}.jpg"]
    elif r < 0.78:
        p = part(start_id + rng.randrange(span))
        keys += [f"media_attachments/files/{p}/original/{name}.png",
                 f"media_attachments/files/{p}/small/{name}.png"]
    elif r < 0.82:
        p = part(start_id + rng.randrange(span))
        keys += [f"media_attachments/files/{p}/original/{name}.jpeg"]
    elif r < 0.92:
        p = part(rng.randrange(1, 2_000_000))
        kind = rng.choice(["avatars", "headers"])
        keys += [f"cache/accounts/{kind}/{p}/original/{name}.png"]
    elif r < 0.98:
        keys += [f"cache/preview_cards/images/{part(rng.randrange(1, 3_000_000))}/original/{name}.jpg"]
    else:
        p = part(rng.randrange(1, 50_000))
        keys += [f"cache/custom_emojis/images/{p}/original/{name}.png",
                 f"cache/custom_emojis/images/{p}/static/{name}.png"]
keys = keys[:n - 2] + ["robots.txt", "stray/backup.tar"]
q = queue.Queue()
for k in keys:
    q.put(k)
def worker():
    while True:
        try:
            k = q.get_nowait()
        except queue.Empty:
            return
        c.put_object(Bucket=bucket, Key=k, Body=b"0123456789abcdef")
t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(16)]
for t in ts: t.start()
for t in ts: t.join()
print(f"seeded {len(keys)} objects in {time.time() - t0:.0f}s")
EOF

cat >"$TMP/env" <<EOF
DATABASE_URL=$PG_BASE/$DB_NAME
S3_ENABLED=true
S3_BUCKET=$BUCKET
S3_REGION=us-east-1
S3_ENDPOINT=$PROXY
AWS_ACCESS_KEY_ID=mastomedia-test
AWS_SECRET_ACCESS_KEY=mastomedia-test-secret
EOF

timed() {
    local label=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$TMP/out" 2>"$TMP/err" || { echo "$label failed:"; tail -5 "$TMP/err"; }
    t1=$(date +%s.%N)
    printf '%-44s %7.1f s   %s\n' "$label" "$(echo "$t1 - $t0" | bc)" "$(tail -n "${TAIL:-1}" "$TMP/out" | tr '\n' ' ')"
}

log "timing (one run each, against the proxy $PROXY)"
curl -s -X DELETE "$PROXY/__stats/$BUCKET" >/dev/null
TAIL=1 timed "mastomedia du --json (concurrency 8)" \
    bash -c "$BIN -q --env-file $TMP/env du --json | $PY -c 'import json,sys; r=json.load(sys.stdin); print(r[\"total\"], r[\"requests\"])'"
TAIL=1 timed "mastomedia du --json --concurrency 1" \
    bash -c "$BIN -q --env-file $TMP/env du --json --concurrency 1 | $PY -c 'import json,sys; r=json.load(sys.stdin); print(r[\"total\"])'"
if command -v aws >/dev/null; then
    TAIL=2 timed "aws s3 ls --recursive --summarize" \
        env AWS_ACCESS_KEY_ID=mastomedia-test AWS_SECRET_ACCESS_KEY=mastomedia-test-secret \
        AWS_DEFAULT_REGION=us-east-1 AWS_REQUEST_CHECKSUM_CALCULATION=when_required \
        aws --endpoint-url "$PROXY" s3 ls "s3://$BUCKET" --recursive --summarize
fi
if command -v rclone >/dev/null; then
    TAIL=2 timed "rclone size" env -u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_TYPE=s3 \
        RCLONE_CONFIG_BENCH_PROVIDER=Other RCLONE_CONFIG_BENCH_ENDPOINT="$PROXY" \
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=mastomedia-test \
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=mastomedia-test-secret \
        RCLONE_CONFIG_BENCH_REGION=us-east-1 RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true \
        rclone size "bench:$BUCKET"
fi
psql "$PG_BASE/postgres" -Xq -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)"
