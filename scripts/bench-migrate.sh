#!/usr/bin/env bash
# Benchmark `mastomedia migrate` (public/system → bucket) against the local S3 server, with
# `aws s3 sync` on the same tree and server for comparison.
#
#   bash scripts/bench-migrate.sh
#   BENCH_FILES=2000 BENCH_PEER=s3cmd bash scripts/bench-migrate.sh
#
# 1. Generates a tree of BENCH_FILES (default 10000) files in Mastodon's layout (media
#    originals and small versions, thumbnails, cache/ copies of remote media, avatars and
#    headers, custom emojis, preview cards, site uploads, a few backups), 1–60 KiB each
#    with the right magic bytes, plus BENCH_BIG (default 3) files of 20 MiB (multipart at
#    the default 8 MiB threshold). Deterministic (seeded).
# 2. Starts tests/support/s3server.py (moto behind the SigV4-checking proxy, whose
#    /__stats/<bucket> counts every request) and creates one bucket per tool.
# 3. Runs `mastomedia -q migrate --json` (debug build, `cargo build --locked`; the binary
#    is ${CARGO_TARGET_DIR:-target}/debug/mastomedia) with its defaults (8 uploads in
#    flight, no --rate), then again after completion, and reports files/s and MiB/s (from
#    --json and from wall time) and the requests of the re-run (--json `requests` and the
#    proxy's count).
# 4. The peer (BENCH_PEER: awscli (default), s3cmd, or "" to skip) copies the same tree
#    into its own bucket with the same headers (public-read, Mastodon's Cache-Control), is
#    re-run the same way, and the ratios are printed. Peers live in their own venv
#    (${MASTOMEDIA_PEER_VENV:-~/.cache/mastomedia/peer-venv}, as scripts/bench-prune.sh).
#
# Scratch files go to a temporary directory (removed at exit unless BENCH_KEEP_TMP=1);
# nothing is written to the repository. moto is the bottleneck for small PUTs (about
# 200/s on 2 cores, see docs/test-servers.md): these numbers compare tools on the same
# server, they are not what a real provider gives.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
FILES=${BENCH_FILES:-10000}
BIG=${BENCH_BIG:-3}
PEER=${BENCH_PEER-awscli}
BIN=${CARGO_TARGET_DIR:-target}/debug/mastomedia
CACHE_CONTROL="public, max-age=315576000, immutable"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

source scripts/services.sh >/dev/null 2>&1 || { source scripts/services.sh; exit 1; }
PY=$MASTOMEDIA_TEST_PYTHON

log "cargo build --locked (debug)"
cargo build --locked --quiet

PEER_VENV=${MASTOMEDIA_PEER_VENV:-${HOME:-/root}/.cache/mastomedia/peer-venv}
if [ -n "$PEER" ] && ! { [ -x "$PEER_VENV/bin/aws" ] && [ -x "$PEER_VENV/bin/s3cmd" ]; }; then
    log "installing awscli and s3cmd into $PEER_VENV (pip)"
    rm -rf "$PEER_VENV"
    python3 -m venv "$PEER_VENV"
    "$PEER_VENV/bin/pip" install -q --disable-pip-version-check awscli s3cmd
fi

TMP=$(mktemp -d /tmp/mastomedia-bench-migrate.XXXXXX)
S3_PID=
cleanup() {
    [ -n "$S3_PID" ] && kill "$S3_PID" 2>/dev/null || true
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then echo "scratch files kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "generating $FILES files + $BIG x 20 MiB in $TMP/system"
"$PY" - "$TMP/system" "$FILES" "$BIG" <<'EOF'
import os, random, sys
root, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
MAGIC = {
    "png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "jpeg": b"\xff\xd8\xff\xe0\0\x10JFIF\0",
    "jpg": b"\xff\xd8\xff\xe0\0\x10JFIF\0", "gif": b"GIF89a\x01\0\x01\0",
    "mp4": b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom", "webp": b"RIFF\x24\0\0\0WEBPVP8 ",
    "zip": b"PK\x03\x04\x14\0\0\0",
}
def part(i, digits):
    s = str(i).zfill(digits)
    return "/".join(s[j:j + 3] for j in range(0, len(s), 3))
def write(key, size):
    ext = key.rsplit(".", 1)[1]
    p = os.path.join(root, key)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(MAGIC[ext] + rng.randbytes(max(0, size - len(MAGIC[ext]))))
made = 0
def small():
    return rng.randint(1024, 60 * 1024)
while made < n:
    r = rng.random()
    mid = 109345678901234567 + made * 7919
    name = "%016x" % rng.getrandbits(64)
    if r < 0.55:   # remote media: cache/, original + small
        ext = rng.choice(["jpeg", "png", "mp4", "gif"])
        base = f"cache/media_attachments/files/{part(mid, 18)}"
        write(f"{base}/original/{name}.{ext}", small())
        write(f"{base}/small/{name}.png" if ext in ("mp4", "gif") else f"{base}/small/{name}.{ext}", small())
        made += 2
    elif r < 0.75:  # local media
        ext = rng.choice(["jpeg", "png", "mp4"])
        base = f"media_attachments/files/{part(mid, 18)}"
        write(f"{base}/original/{name}.{ext}", small())
        write(f"{base}/small/{name}.png" if ext == "mp4" else f"{base}/small/{name}.{ext}", small())
        made += 2
        if ext == "mp4":
            write(f"media_attachments/thumbnails/{part(mid, 18)}/original/{name}.jpeg", small())
            made += 1
    elif r < 0.85:  # avatars and headers, remote (cache/) and local
        acct = rng.randint(1, 10**9)
        pre = rng.choice(["cache/", ""])
        for att in ("avatars", "headers"):
            write(f"{pre}accounts/{att}/{part(acct, 9)}/original/{name}.jpeg", small())
        made += 2
    elif r < 0.93:  # preview cards
        write(f"cache/preview_cards/images/{part(rng.randint(1, 10**6), 9)}/original/{name}.webp", small())
        made += 1
    elif r < 0.99:  # custom emojis
        pre = rng.choice(["cache/", ""])
        eid = rng.randint(1, 10**6)
        write(f"{pre}custom_emojis/images/{part(eid, 9)}/original/{name}.png", small())
        write(f"{pre}custom_emojis/images/{part(eid, 9)}/static/{name}.png", small())
        made += 2
    elif r < 0.995:
        write(f"site_uploads/files/{part(rng.randint(1, 99), 9)}/original/{name}.png", small())
        made += 1
    else:
        write(f"backups/dumps/{part(rng.randint(1, 999), 9)}/original/archive-{name}.zip", small())
        made += 1
for i in range(big):
    write(f"media_attachments/files/{part(110000000000000000 + i, 18)}/original/{'%016x' % rng.getrandbits(64)}.mp4",
          20 * 1024 * 1024)
EOF
TOTAL_FILES=$(find "$TMP/system" -type f | wc -l)
TOTAL_BYTES=$(find "$TMP/system" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
log "tree: $TOTAL_FILES files, $((TOTAL_BYTES / 1048576)) MiB"

"$PY" tests/support/s3server.py --no-stdin-watch --port-file "$TMP/s3server.json" \
    >"$TMP/s3server.log" 2>&1 &
S3_PID=$!
for _ in $(seq 1 100); do [ -s "$TMP/s3server.json" ] && break; sleep 0.2; done
[ -s "$TMP/s3server.json" ] || { cat "$TMP/s3server.log"; exit 1; }
jf() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d.get(k, 0) if isinstance(d, dict) else 0
print(d)' "$@"; }
MOTO=$(jf "$TMP/s3server.json" moto)
PROXY=$(jf "$TMP/s3server.json" proxy)
log "S3 server: moto $MOTO, proxy $PROXY (pid $S3_PID)"
for b in bench-migrate bench-peer; do curl -sf -X PUT "$MOTO/$b" >/dev/null; done

cat >"$TMP/env" <<EOF
DATABASE_URL=postgres://unused@127.0.0.1:9/unused
S3_ENABLED=true
S3_BUCKET=bench-migrate
S3_REGION=us-east-1
S3_ENDPOINT=$PROXY
S3_PROTOCOL=http
AWS_ACCESS_KEY_ID=mastomedia-test
AWS_SECRET_ACCESS_KEY=mastomedia-test-secret
EOF

now() { date +%s.%N; }
secs_since() { "$PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$1" "$(now)"; }

run_tool() {  # $1 = output name
    local rc=0 t0
    t0=$(now)
    "$BIN" -q --env-file "$TMP/env" migrate --from "$TMP/system" --journal "$TMP/journal.sqlite" \
        --json >"$TMP/$1.json" 2>"$TMP/$1.err" || rc=$?
    echo "$(secs_since "$t0")" >"$TMP/$1.wall"
    [ "$rc" -eq 0 ] || { log "mastomedia exited with $rc:"; tail -n 20 "$TMP/$1.err"; exit 1; }
}

log "mastomedia migrate: first run"
curl -sf -X DELETE "$PROXY/__stats/bench-migrate" >/dev/null
run_tool first
curl -sf "$PROXY/__stats/bench-migrate" >"$TMP/first.stats"
log "mastomedia migrate: re-run after completion"
curl -sf -X DELETE "$PROXY/__stats/bench-migrate" >/dev/null
run_tool again
curl -sf "$PROXY/__stats/bench-migrate" >"$TMP/again.stats"

peer_cmd() {
    case $PEER in
        awscli)
            env AWS_ACCESS_KEY_ID=mastomedia-test AWS_SECRET_ACCESS_KEY=mastomedia-test-secret \
                AWS_DEFAULT_REGION=us-east-1 AWS_REQUEST_CHECKSUM_CALCULATION=when_required \
                AWS_RESPONSE_CHECKSUM_VALIDATION=when_required \
                "$PEER_VENV/bin/aws" --endpoint-url "$PROXY" s3 sync "$TMP/system" s3://bench-peer \
                --acl public-read --cache-control "$CACHE_CONTROL" --only-show-errors ;;
        s3cmd)
            "$PEER_VENV/bin/s3cmd" --access_key=mastomedia-test --secret_key=mastomedia-test-secret \
                --host "${PROXY#http://}" --host-bucket "${PROXY#http://}" --no-ssl --region us-east-1 \
                --acl-public --add-header "Cache-Control: $CACHE_CONTROL" --guess-mime-type \
                --no-check-md5 --quiet sync "$TMP/system/" s3://bench-peer/ ;;
        *) log "unknown peer $PEER"; exit 2 ;;
    esac
}
if [ -n "$PEER" ]; then
    for pass in first again; do
        log "peer $PEER: $pass run"
        curl -sf -X DELETE "$PROXY/__stats/bench-peer" >/dev/null
        t0=$(now)
        peer_cmd >"$TMP/peer-$pass.out" 2>&1 || { log "peer failed:"; tail -n 20 "$TMP/peer-$pass.out"; }
        secs_since "$t0" >"$TMP/peer-$pass.wall"
        curl -sf "$PROXY/__stats/bench-peer" >"$TMP/peer-$pass.stats"
    done
fi

echo
"$PY" - "$TMP" "$TOTAL_FILES" "$TOTAL_BYTES" "$PEER" "$MOTO" <<'EOF'
import json, os, sys
import boto3
tmp, files, nbytes, peer, moto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def load(n): return json.load(open(os.path.join(tmp, n)))
def wall(n): return float(open(os.path.join(tmp, n)).read())
def ops(d): return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"
def count(bucket):
    c = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                     aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret")
    n = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        n += page.get("KeyCount", 0)
    return n
mib = nbytes / 1048576
r, again = load("first.json"), load("again.json")
w = wall("first.wall")
print(f"tree: {files} files, {mib:.1f} MiB; moto behind the SigV4 proxy on loopback; "
      f"mastomedia debug build, defaults (--concurrency 8, no --rate)")
print(f"mastomedia migrate: {r['files_uploaded']} files uploaded, {r['files_failed']} failed, "
      f"{count('bench-migrate')} objects in the bucket")
print(f"  --json: {r['files_per_second']:.1f} files/s, {r['mib_per_second']:.2f} MiB/s "
      f"({r['elapsed_seconds']:.1f} s)")
print(f"  wall:   {files / w:.1f} files/s, {mib / w:.2f} MiB/s ({w:.1f} s, process start to exit)")
print(f"  requests (--json): {sum(r['requests'].values())} ({ops(r['requests'])})")
print(f"  requests (proxy):  {load('first.stats')['total']} ({ops(load('first.stats')['ops'])})")
st = load("again.stats")
print(f"re-run after completion: {again['files_uploaded']} uploaded, {again['files_unchanged']} "
      f"unchanged, {wall('again.wall'):.2f} s wall")
print(f"  requests (--json): {sum(again['requests'].values())} ({ops(again['requests'])})")
print(f"  requests (proxy):  {st['total']} ({ops(st['ops'])}), mutating {st['mutating']}")
if peer:
    pw, ps, pa = wall("peer-first.wall"), load("peer-first.stats"), load("peer-again.stats")
    print(f"peer {peer} sync: {count('bench-peer')} objects in its bucket")
    print(f"  wall:   {files / pw:.1f} files/s, {mib / pw:.2f} MiB/s ({pw:.1f} s)")
    print(f"  requests (proxy): {ps['total']} ({ops(ps['ops'])})")
    print(f"  re-run: {wall('peer-again.wall'):.2f} s wall, requests (proxy) {pa['total']} "
          f"({ops(pa['ops'])}), mutating {pa['mutating']}")
    print(f"ratio mastomedia / {peer} (wall time, same tree and server): "
          f"{pw / w:.2f}x the files/s; re-run requests {st['total']} vs {pa['total']}")
EOF
