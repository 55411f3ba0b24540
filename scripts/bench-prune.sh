#!/usr/bin/env bash
# Benchmark `mastomedia prune` against the local S3 server, with peer tools for comparison.
#
#   bash scripts/bench-prune.sh                      # N = 10000 and 100000 candidate rows
#   BENCH_SIZES=10000 bash scripts/bench-prune.sh
#
# For each N: a fresh database (mastomedia_bench, 4.6 fixture) and a fresh moto state;
# scripts/seed.py --candidates N (N remote media rows older than 7 days with a file or
# thumbnail, plus the usual mix of newer, local and already pruned rows). Objects are
# uploaded for the candidate rows only (the others are never touched by prune); when the
# upload is projected to take over BENCH_MAX_UPLOAD_SECONDS (default 600) at the rate
# measured so far, rows are seeded with --objects none and the output says so.
# Then `mastomedia -q prune --json --days 7` runs under /usr/bin/time -v through the
# SigV4-checking proxy, whose /__stats/<bucket> counts every request.
#
# Peers (BENCH_PEERS, default "awscli s3cmd"; "" to skip): the same candidate objects are
# also uploaded into one bucket per peer, and the peer deletes that bucket's whole content
# (= exactly the key list mastomedia deletes) through the same proxy:
#   awscli 1.x  `aws s3 rm --recursive`      (one DeleteObject per key)
#   s3cmd 2.4   `s3cmd del --recursive`      (DeleteObjects, 1000 keys per request)
# Peers only delete objects: they do not read or update the database.
# moto 5.2.5 answers 500 (KeyError) to a listing that races a delete of a key in the same
# bucket (it copies the key dict, then looks each key up again), and listing is O(keys in
# the bucket). awscli lists while it deletes, so it runs with AWS_MAX_ATTEMPTS=20.
# Peers live in their own venv (${MASTOMEDIA_PEER_VENV:-~/.cache/mastomedia/peer-venv}):
# awscli pins a botocore that would downgrade the test venv's boto3.
#
# Everything goes to stdout; nothing is written to the repository (scratch files in a
# temporary directory, removed at exit unless BENCH_KEEP_TMP=1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZES=${BENCH_SIZES:-"10000 100000"}
PEERS=${BENCH_PEERS-"awscli s3cmd"}
MAX_UPLOAD=${BENCH_MAX_UPLOAD_SECONDS:-600}
DB_NAME=mastomedia_bench
BUCKET=mastomedia-bench
BIN=target/debug/mastomedia

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

source scripts/services.sh >/dev/null 2>&1 || { source scripts/services.sh; exit 1; }
PY=$MASTOMEDIA_TEST_PYTHON
PG_BASE=${MASTOMEDIA_TEST_DATABASE_URL%/*}
DB_URL=$PG_BASE/$DB_NAME

log "cargo build --locked"
cargo build --locked --quiet

if [ ! -x /usr/bin/time ]; then
    log "installing GNU time (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
fi

PEER_VENV=${MASTOMEDIA_PEER_VENV:-${HOME:-/root}/.cache/mastomedia/peer-venv}
if [ -n "$PEERS" ]; then
    if ! { [ -x "$PEER_VENV/bin/aws" ] && [ -x "$PEER_VENV/bin/s3cmd" ]; }; then
        log "installing awscli and s3cmd into $PEER_VENV (pip)"
        rm -rf "$PEER_VENV"
        python3 -m venv "$PEER_VENV"
        "$PEER_VENV/bin/pip" install -q --disable-pip-version-check awscli s3cmd
    fi
fi

TMP=$(mktemp -d /tmp/mastomedia-bench.XXXXXX)
S3_PID=
cleanup() {
    if [ -n "$S3_PID" ]; then kill "$S3_PID" 2>/dev/null || true; fi
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then echo "scratch files kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PY" tests/support/s3server.py --no-stdin-watch --port-file "$TMP/s3server.json" \
    >"$TMP/s3server.log" 2>&1 &
S3_PID=$!
for _ in $(seq 1 100); do [ -s "$TMP/s3server.json" ] && break; sleep 0.2; done
[ -s "$TMP/s3server.json" ] || { cat "$TMP/s3server.log"; exit 1; }
jf() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$@"; }
MOTO=$(jf "$TMP/s3server.json" moto)
PROXY=$(jf "$TMP/s3server.json" proxy)
log "S3 server: moto $MOTO, proxy $PROXY (pid $S3_PID)"

cat >"$TMP/env" <<EOF
DATABASE_URL=$DB_URL
S3_ENABLED=true
S3_BUCKET=$BUCKET
S3_REGION=us-east-1
S3_ENDPOINT=$PROXY
S3_PROTOCOL=http
AWS_ACCESS_KEY_ID=mastomedia-test
AWS_SECRET_ACCESS_KEY=mastomedia-test-secret
EOF
cat >"$TMP/s3cfg" <<EOF
[default]
access_key = mastomedia-test
secret_key = mastomedia-test-secret
host_base = ${PROXY#http://}
host_bucket = ${PROXY#http://}
use_https = False
signature_v2 = False
bucket_location = us-east-1
EOF

# Seconds of wall time of a command (GNU time, %e), its stdout discarded; a failure is
# logged and does not stop the benchmark.
timed() {
    local rc=0
    /usr/bin/time -f '%e' -o "$TMP/peer.time" "$@" >/dev/null || rc=$?
    [ "$rc" -eq 0 ] || log "peer command failed with exit code $rc: $*" >&2
    tail -n 1 "$TMP/peer.time"
}

RATE=${BENCH_UPLOAD_RATE:-190}   # objects/s; replaced by the measured rate after a seed
OBJ_PER_ROW=2.1                  # candidate objects per candidate row (measured: ~2.0-2.1)
RESULTS=$TMP/results.jsonl
: >"$RESULTS"

for N in $SIZES; do
    log "=== N=$N candidate media rows"
    curl -sf -X POST "$MOTO/moto-api/reset" >/dev/null
    curl -sf -X POST "$PROXY/__reset" >/dev/null
    psql "$PG_BASE/postgres" -Xq -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME" 2>/dev/null
    psql "$DB_URL" -Xq -v ON_ERROR_STOP=1 -f tests/fixtures/mastodon-4.6.sql

    n_peers=$(wc -w <<<"$PEERS")
    projected=$("$PY" -c "print(int($N * $OBJ_PER_ROW * (1 + $n_peers) / $RATE))")
    projected_alone=$("$PY" -c "print(int($N * $OBJ_PER_ROW / $RATE))")
    mode=candidates
    peers_now=$PEERS
    note=""
    if [ "$projected" -gt "$MAX_UPLOAD" ]; then
        if [ -n "$PEERS" ] && [ "$projected_alone" -le "$MAX_UPLOAD" ]; then
            peers_now=""
            note="peers skipped: uploading their copies was projected at ${projected}s total (> ${MAX_UPLOAD}s)"
        else
            mode=none
            peers_now=""
            note="objects NOT uploaded (--objects none): projected upload ${projected_alone}s at ${RATE} objects/s > ${MAX_UPLOAD}s; prune finds every key already gone, so this run measures database paging, listing requests and memory, not deletes"
        fi
    fi
    [ -n "$note" ] && log "$note"
    also=()
    for p in $peers_now; do also+=(--also-bucket "$BUCKET-$p"); done
    log "seeding: scripts/seed.py --candidates $N --days 7 --objects $mode ${also[*]:-}"
    "$PY" scripts/seed.py --database-url "$DB_URL" --endpoint "$MOTO" --bucket "$BUCKET" \
        --create-bucket --candidates "$N" --days 7 --objects "$mode" --seed 7 \
        --accounts 1000 --quiet --summary-json "$TMP/seed.json" --keys-out "$TMP/keys.txt" \
        "${also[@]}" | sed 's/^/  /'
    if [ "$mode" = candidates ]; then
        up=$(jf "$TMP/seed.json" objects_uploaded)
        secs=$(jf "$TMP/seed.json" seconds_upload)
        RATE=$("$PY" -c "print(max(1, int($up / max($secs, 0.1))))")
        log "measured upload rate: $RATE objects/s"
    fi

    curl -sf -X DELETE "$PROXY/__stats/$BUCKET" >/dev/null
    log "running: /usr/bin/time -v $BIN -q --env-file ENV prune --json --days 7"
    rc=0
    /usr/bin/time -v -o "$TMP/time.txt" "$BIN" -q --env-file "$TMP/env" prune --json --days 7 \
        >"$TMP/prune.json" 2>"$TMP/prune.err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "mastomedia exited with $rc; stderr:"
        tail -n 20 "$TMP/prune.err"
    fi
    curl -sf "$PROXY/__stats/$BUCKET" >"$TMP/stats.json"

    peer_json="{}"
    for p in $peers_now; do
        b="$BUCKET-$p"
        curl -sf -X DELETE "$PROXY/__stats/$b" >/dev/null
        log "peer $p: deleting $(wc -l <"$TMP/keys.txt") keys from s3://$b"
        case $p in
            awscli)
                secs=$(timed env AWS_ACCESS_KEY_ID=mastomedia-test \
                    AWS_SECRET_ACCESS_KEY=mastomedia-test-secret AWS_DEFAULT_REGION=us-east-1 \
                    AWS_REQUEST_CHECKSUM_CALCULATION=when_required \
                    AWS_RESPONSE_CHECKSUM_VALIDATION=when_required \
                    AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=20 \
                    "$PEER_VENV/bin/aws" --endpoint-url "$PROXY" s3 rm "s3://$b" \
                    --recursive --only-show-errors) ;;
            s3cmd)
                secs=$(timed "$PEER_VENV/bin/s3cmd" -c "$TMP/s3cfg" del --recursive --force "s3://$b") ;;
            *) log "unknown peer $p"; continue ;;
        esac
        curl -sf "$PROXY/__stats/$b" >"$TMP/peer-$p.json"
        left=$("$PY" - "$MOTO" "$b" <<'EOF'
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret")
print(c.list_objects_v2(Bucket=sys.argv[2]).get("KeyCount", 0))
EOF
)
        peer_json=$("$PY" -c 'import json,sys
d=json.loads(sys.argv[1]); d[sys.argv[2]]={"seconds": float(sys.argv[3]), "stats": json.load(open(sys.argv[4])), "left": int(sys.argv[5])}
print(json.dumps(d))' "$peer_json" "$p" "$secs" "$TMP/peer-$p.json" "$left")
    done

    # Objects of candidate rows still in the bucket (should be 0) and others deleted (should be 0).
    check=$("$PY" - "$MOTO" "$BUCKET" "$TMP/keys.txt" "$mode" <<'EOF'
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret")
keys = set()
for page in c.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
    keys.update(o["Key"] for o in page.get("Contents", []))
cand = set(open(sys.argv[3]).read().split())
print(len(keys & cand) if sys.argv[4] != "none" else -1)
EOF
)
    "$PY" - "$N" "$mode" "$note" "$TMP/prune.json" "$TMP/time.txt" "$TMP/stats.json" \
        "$TMP/seed.json" "$peer_json" "$check" "$rc" >>"$RESULTS" <<'EOF'
import json, re, sys
n, mode, note, prune, timef, stats, seed, peers, check, rc = sys.argv[1:]
try:
    p = json.load(open(prune))
except Exception:
    p = {"passes": [], "requests": {}}
t = open(timef).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", t).group(1)
secs = 0.0
for part in wall.split(":"):
    secs = secs * 60 + float(part)
media = next((x for x in p["passes"] if x["pass"] == "media"), {})
print(json.dumps({"n": int(n), "mode": mode, "note": note, "rc": int(rc), "rss_kb": rss,
                  "wall": secs, "elapsed_tool": p.get("elapsed_seconds"), "media": media,
                  "requests": p.get("requests", {}), "proxy": json.load(open(stats)),
                  "seed": json.load(open(seed)), "peers": json.loads(peers),
                  "candidate_keys_left": int(check)}))
EOF
    log "done N=$N"
done

echo
"$PY" - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]

def ops(d):
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"

def per_key(total, keys):
    return f"{total / keys:.3f}" if keys else "n/a"

print("mastomedia prune --json --days 7 (debug build), local moto behind the SigV4 proxy, "
      "2 cores")
print()
hdr = ["N", "objects", "rows cleared", "objects deleted", "already gone", "requests (tool)",
       "requests (proxy)", "req/deleted key", "peak RSS", "wall", "rows/s"]
table = []
for r in rows:
    m = r["media"]
    tool_total = sum(r["requests"].values())
    proxy_total = r["proxy"].get("total", 0)
    table.append([str(r["n"]), r["mode"] if r["mode"] != "candidates" else "uploaded",
                  str(m.get("rows_cleared", "?")), str(m.get("objects_deleted", "?")),
                  str(m.get("objects_already_gone", "?")), str(tool_total), str(proxy_total),
                  per_key(proxy_total, m.get("objects_deleted", 0)),
                  f"{r['rss_kb'] / 1024:.1f} MiB", f"{r['wall']:.1f} s",
                  f"{m.get('rows_cleared', 0) / r['wall']:.0f}" if r["wall"] else "?"])
w = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(hdr)]
print("  ".join(h.rjust(w[i]) for i, h in enumerate(hdr)))
for t in table:
    print("  ".join(c.rjust(w[i]) for i, c in enumerate(t)))
print()
for r in rows:
    s = r["seed"]
    print(f"N={r['n']}: seeded {s['media']} media rows ({s['candidates']} candidates, "
          f"{s['candidate_objects']} candidate objects, {s['objects_uploaded']} uploaded in "
          f"{s['seconds_upload']} s), {s['statuses']} statuses; exit code {r['rc']}")
    m = r["media"]
    codes = sorted({f["code"] for f in m.get("failures", [])})
    print(f"  media pass: {m.get('rows_selected', '?')} selected, {m.get('rows_failed', '?')} "
          f"rows failed, {m.get('objects_failed', '?')} objects failed"
          f"{' (' + ', '.join(codes) + ')' if codes else ''}; tool elapsed "
          f"{r['elapsed_tool']} s")
    print(f"  requests by op, from --json: {ops(r['requests'])}")
    print(f"  requests by op, from proxy:  {ops(r['proxy'].get('ops', {}))}"
          f" (DeleteObjects keys {r['proxy'].get('delete_objects_keys', 0)}, "
          f"largest batch {r['proxy'].get('max_delete_objects_keys', 0)})")
    if r["candidate_keys_left"] >= 0:
        print(f"  candidate objects still in the bucket after prune: {r['candidate_keys_left']}")
    if r["note"]:
        print(f"  NOTE: {r['note']}")
    m = r["media"]
    deleted = m.get("objects_deleted", 0)
    tool_req = r["proxy"].get("total", 0)
    for name, pr in r["peers"].items():
        st = pr["stats"]
        keys = st.get("ops", {}).get("DeleteObject", 0) + st.get("delete_objects_keys", 0)
        print(f"  peer {name}: {pr['seconds']:.1f} s, {st.get('total', 0)} requests "
              f"({ops(st.get('ops', {}))}) for {keys} keys = {per_key(st.get('total', 0), keys)} "
              f"req/key; objects left {pr['left']}")
        if keys and deleted:
            print(f"    mastomedia / {name}: requests per key "
                  f"{(tool_req / deleted) / (st['total'] / keys):.2f}x, wall time "
                  f"{r['wall'] / pr['seconds']:.2f}x (mastomedia also pages and updates the "
                  f"database; the peer only deletes)")
EOF
