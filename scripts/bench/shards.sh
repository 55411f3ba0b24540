#!/usr/bin/env bash
# Wall time of a sharded migrate (issue 13) against one process, on the same tree and the
# same server: `migrate --shard K/N` as N concurrent processes vs one unsharded run.
#
#   bash scripts/bench/shards.sh                          # 20000 small files, 4 shards, moto
#   BENCH_FILES=5000 BENCH_SHARDS=2 bash scripts/bench/shards.sh
#   BENCH_SERVER=s3s-fs bash scripts/bench/shards.sh      # s3s-fs (installed as run.sh does)
#
# 1. `cargo build --release --locked` (${CARGO_TARGET_DIR:-target}/release/mastomedia).
# 2. A tree of BENCH_FILES (default 20000) files of 200–2000 bytes in Mastodon's layout
#    (media originals and small styles, 18-digit partitions; seeded).
# 3. The server: moto behind tests/support/s3server.py's SigV4 proxy (default; about
#    200 small PUTs/s on 2 cores, so the server may be the limit), or s3s-fs on loopback.
# 4. One `migrate --concurrency C` (BENCH_CONCURRENCY, default 8) into bucket `one`, then
#    BENCH_SHARDS (default 4) `migrate --shard K/N --concurrency C` processes at once into
#    bucket `sharded`, each with its own journal; wall time of each (the sharded one from
#    the first start to the last exit), objects counted by a paged listing afterwards.
# Not a test and not part of .ci/run: a shared machine's times are noisy (the load average
# is printed). Scratch files in a temporary directory, removed at exit (BENCH_KEEP_TMP=1
# keeps them).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
FILES=${BENCH_FILES:-20000}
SHARDS=${BENCH_SHARDS:-4}
CONC=${BENCH_CONCURRENCY:-8}
SERVER=${BENCH_SERVER:-moto}
BIN=${CARGO_TARGET_DIR:-target}/release/mastomedia
CACHE=${HOME:-/root}/.cache/mastomedia
AK=mastomedia-test
SK=mastomedia-test-secret

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

source scripts/services.sh >/dev/null 2>&1 || { source scripts/services.sh; exit 1; }
PY=$MASTOMEDIA_TEST_PYTHON

log "cargo build --release --locked"
cargo build --release --locked --quiet

TMP=$(mktemp -d /tmp/mastomedia-bench-shards.XXXXXX)
SRV_PID=
cleanup() {
    if [ -n "$SRV_PID" ]; then kill "$SRV_PID" 2>/dev/null || true; fi
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then echo "scratch files kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "generating $FILES files in $TMP/system"
"$PY" - "$TMP/system" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(13)
png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"
for i in range(n // 2):
    ident = str(109_000_000_000_000_000 + rng.randrange(10**15)).zfill(18)
    part = "/".join(ident[j:j + 3] for j in range(0, 18, 3))
    name = "%016x.png" % rng.getrandbits(64)
    for style in ("original", "small"):
        p = os.path.join(root, "media_attachments/files", part, style, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(png + rng.randbytes(rng.randrange(200, 2000)))
EOF
find "$TMP/system" -type d -exec chmod 755 {} + && find "$TMP/system" -type f -exec chmod 644 {} +

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
case $SERVER in
    moto)
        "$PY" tests/support/s3server.py --no-stdin-watch --port-file "$TMP/s3server.json" \
            >"$TMP/s3server.log" 2>&1 &
        SRV_PID=$!
        for _ in $(seq 1 100); do [ -s "$TMP/s3server.json" ] && break; sleep 0.2; done
        [ -s "$TMP/s3server.json" ] || { cat "$TMP/s3server.log"; exit 1; }
        ENDPOINT=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxy"])' "$TMP/s3server.json")
        ;;
    s3s-fs)
        S3S_BIN=$CACHE/s3s-fs/bin/s3s-fs
        if [ ! -x "$S3S_BIN" ]; then
            log "installing s3s-fs 0.14.1 into $CACHE/s3s-fs (cargo install, 3-4 min cold)"
            cargo install s3s-fs@0.14.1 --features binary --locked --root "$CACHE/s3s-fs" \
                --target-dir "$CACHE/s3s-fs-build" --quiet
        fi
        mkdir -p "$TMP/s3s-data"
        PORT=$(free_port)
        "$S3S_BIN" --host 127.0.0.1 --port "$PORT" --access-key "$AK" --secret-key "$SK" \
            "$TMP/s3s-data" >"$TMP/s3s-fs.log" 2>&1 &
        SRV_PID=$!
        ENDPOINT=http://127.0.0.1:$PORT
        for _ in $(seq 1 50); do curl -s -o /dev/null "$ENDPOINT/" && break; sleep 0.1; done
        ;;
    *) echo "BENCH_SERVER must be moto or s3s-fs, not '$SERVER'" >&2; exit 2 ;;
esac

s3() {  # s3 create|count BUCKET
    "$PY" - "$ENDPOINT" "$1" "$2" <<'EOF'
import json, sys
import boto3
from botocore.config import Config
endpoint, what, bucket = sys.argv[1:4]
c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret",
                 config=Config(s3={"addressing_style": "path"}))
if what == "create":
    c.create_bucket(Bucket=bucket)
else:
    n = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        n += len(page.get("Contents", []))
    print(n)
EOF
}
env_for() {
    cat >"$TMP/env-$1" <<EOF
DATABASE_URL=postgres://unused@127.0.0.1:9/unused
S3_ENABLED=true
S3_BUCKET=$1
S3_REGION=us-east-1
S3_ENDPOINT=$ENDPOINT
S3_PROTOCOL=http
AWS_ACCESS_KEY_ID=$AK
AWS_SECRET_ACCESS_KEY=$SK
EOF
}
for b in one sharded; do s3 create "$b"; env_for "$b"; done
now() { date +%s.%N; }

log "one process: load $(cut -d' ' -f1-3 /proc/loadavg)"
ONE_CMD=("$BIN" -q --env-file "$TMP/env-one" migrate --from "$TMP/system" --journal "$TMP/one.sqlite" --concurrency "$CONC" --json)
t0=$(now)
"${ONE_CMD[@]}" >"$TMP/one.json"
t1=$(now)
ONE_S=$(echo "$t1 - $t0" | bc)

log "$SHARDS shards: load $(cut -d' ' -f1-3 /proc/loadavg)"
pids=()
t0=$(now)
for k in $(seq 0 $((SHARDS - 1))); do
    "$BIN" -q --env-file "$TMP/env-sharded" migrate --from "$TMP/system" --journal "$TMP/shard-$k.sqlite" \
        --concurrency "$CONC" --shard "$k/$SHARDS" --json >"$TMP/shard-$k.json" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
t1=$(now)
SHARD_S=$(echo "$t1 - $t0" | bc)

ONE_N=$(s3 count one)
SHARD_N=$(s3 count sharded)
echo "server=$SERVER files=$FILES shards=$SHARDS concurrency=$CONC nproc=$(nproc) load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "command one:    ${ONE_CMD[*]}"
echo "command shards: $BIN -q --env-file ENV migrate --from TREE --journal J-K --concurrency $CONC --shard K/$SHARDS --json  (K = 0..$((SHARDS - 1)) at once)"
printf 'one process: %.1f s, %s objects\n' "$ONE_S" "$ONE_N"
printf '%s shards:    %.1f s, %s objects (per shard: %s)\n' "$SHARDS" "$SHARD_S" "$SHARD_N" \
    "$(for k in $(seq 0 $((SHARDS - 1))); do "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["files_uploaded"], end=" ")' "$TMP/shard-$k.json"; done)"
printf 'speed-up: %.2fx\n' "$(echo "$ONE_S / $SHARD_S" | bc -l)"
