#!/usr/bin/env bash
# Every benchmark line of issue 11 in one run, against the peers, on the same data and
# servers; writes docs/benchmarks.md.
#
#   bash scripts/bench/run.sh                    # BENCH_SCALE=small: a smoke run (~10 min)
#   BENCH_SCALE=full bash scripts/bench/run.sh   # the issue's sizes (see docs/benchmarks.md)
#
# Steps (each line's raw output stays in $BENCH_OUT, default target/bench/<UTC time>):
#  1. `cargo build --release --locked` (mastomedia and examples/put_loop.rs).
#  2. Peers, installed idempotently under ~/.cache/mastomedia: rclone (Debian apt), awscli
#     and s3cmd (PyPI, their own venv peer-venv: awscli pins a botocore the test venv's
#     boto3 would not accept), s3s-fs 0.14.1 (`cargo install … --root ~/.cache/mastomedia/s3s-fs`).
#  3. Servers: s3s-fs on loopback (strict SigV4, fast: the tool is measured, not the server)
#     for the migrate and limit lines; moto behind tests/support/s3server.py's SigV4 proxy
#     (counts every request, keeps ACLs) for du and prune, started through
#     scripts/bench/fastmoto.py (moto's listing answered from a sorted index: time per page,
#     not per bucket; self-tested against moto's own method first); s3s-fs for memory;
#     Postgres from scripts/services.sh.
#  4. Lines: migrate (mastomedia, rclone, aws s3 sync, s3cmd sync; concurrency 8 and 32),
#     limit (examples/put_loop.rs: from memory, and streamed from the file in 4 KiB and
#     256 KiB reads), du (before prune, on the busy seed's bucket: mastomedia du,
#     rclone size, aws s3 ls --recursive --summarize; once on loopback, once with
#     BENCH_DU_LATENCY_MS added to every request by the proxy), prune (a busy and a sparse seed,
#     each: mastomedia prune vs a HEAD + DELETE loop at equal concurrency vs s3cmd del;
#     see the du and prune section), memory (peak RSS, /usr/bin/time -v,
#     of prune over N candidate rows and of migrate over N files), plan (EXPLAIN (ANALYZE,
#     BUFFERS) of the candidate query on a generated media_attachments of BENCH_PLAN_ROWS).
#  5. scripts/bench/report.py writes docs/benchmarks.md (BENCH_DOC to write elsewhere).
#
# A quick migrate-only run (one line, a few peers, the report written elsewhere):
#   BENCH_LINES=migrate BENCH_MIGRATE_TOOLS="mastomedia putloop rclone" \
#       BENCH_DOC=/tmp/migrate.md BENCH_SCALE=full bash scripts/bench/run.sh
# BENCH_MIGRATE_TOOLS picks the migrate line's tools among mastomedia, mastomedia-single
# (the same with --multipart-threshold 209715200, rclone's cutoff), putloop (the limit
# line from memory), putloop-stream (its 4 KiB and 256 KiB streamed variants), rclone,
# awscli and s3cmd (default: all); awscli and s3cmd are installed only when picked.
# BENCH_MIGRATE_PERF=1 also records `perf record -g` of each mastomedia migrate run
# ($BENCH_OUT/migrate-mastomedia-C.perf.data) and `strace -c -f` of a second run
# (migrate-mastomedia-C.strace): the profile of the line, not its time.
#
# Sizes per scale (each can be overridden by its variable):
#   variable               small            full
#   BENCH_MIGRATE_FILES    1000             10000
#   BENCH_CONCURRENCY      "8 32"           "8 32"
#   BENCH_MIGRATE_ROUNDS   1                3        (rounds of the migrate line's mastomedia,
#                                           limit and rclone runs, alternating; the report
#                                           shows each one's median round: one run on these
#                                           shared cores moves by up to 20 %)
#   BENCH_PRUNE_ROWS       2000             100000   (candidate rows per seed; objects ~2 per row)
#   BENCH_PRUNE_SEEDS      "busy sparse"    "busy sparse" (du on the first)
#   BENCH_PRUNE_LOOP_KEYS  0 (all)          10000    (keys the HEAD + DELETE loop runs over)
#   BENCH_MEMORY_ROWS      "10000 100000"   "10000 100000 1000000"
#   BENCH_MEMORY_FILES     "10000"          "10000 100000" (+ 1000000 with BENCH_MEMORY_1M=1:
#                                           1M files on disk and 1M uploads, about 20 min more)
#   BENCH_PLAN_ROWS        1000000          1000000
#   BENCH_DU_LATENCY_MS    30               30       (ms the proxy adds to each request in
#                                           the du line's second run; the first is loopback)
# Not a test and not part of .ci/run: times on a shared machine are noisy (the load average
# is recorded before every measurement); ratios within one run are what to read.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
SCALE=${BENCH_SCALE:-small}
case $SCALE in
    small) d_rounds=1 d_files=1000 d_prune=2000 d_loop=0 d_mem_rows="10000 100000" d_mem_files="10000" ;;
    full) d_rounds=3 d_files=10000 d_prune=100000 d_loop=10000 d_mem_rows="10000 100000 1000000" d_mem_files="10000 100000" ;;
    *) echo "BENCH_SCALE must be small or full, not '$SCALE'" >&2; exit 2 ;;
esac
if [ "${BENCH_MEMORY_1M:-0}" = 1 ]; then d_mem_files="$d_mem_files 1000000"; fi
MIG_FILES=${BENCH_MIGRATE_FILES:-$d_files}
CONCS=${BENCH_CONCURRENCY:-"8 32"}
ROUNDS=${BENCH_MIGRATE_ROUNDS:-$d_rounds}
PRUNE_ROWS=${BENCH_PRUNE_ROWS:-$d_prune}
PRUNE_CONC=${BENCH_PRUNE_CONCURRENCY:-8}
PRUNE_SEEDS=${BENCH_PRUNE_SEEDS:-"busy sparse"}
PRUNE_LOOP_KEYS=${BENCH_PRUNE_LOOP_KEYS:-$d_loop}
MEM_ROWS=${BENCH_MEMORY_ROWS:-$d_mem_rows}
MEM_FILES=${BENCH_MEMORY_FILES:-$d_mem_files}
PLAN_ROWS=${BENCH_PLAN_ROWS:-1000000}
DU_LATENCY=${BENCH_DU_LATENCY_MS:-30}
# Which lines to run (a partial run still writes the report, with "not run" where a line is
# missing): any of migrate (with the limit line), prune (with du), memory, plan.
LINES=" ${BENCH_LINES:-migrate prune memory plan} "
want() { [[ $LINES == *" $1 "* ]]; }
TOOLS=" ${BENCH_MIGRATE_TOOLS:-mastomedia mastomedia-single putloop putloop-stream rclone awscli s3cmd} "
tool() { want migrate && [[ $TOOLS == *" $1 "* ]]; }
CACHE=${HOME:-/root}/.cache/mastomedia
PEER_VENV=${MASTOMEDIA_PEER_VENV:-$CACHE/peer-venv}
S3S_ROOT=$CACHE/s3s-fs
S3S_BIN=$S3S_ROOT/bin/s3s-fs
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BIN=$CARGO_TARGET_DIR/release/mastomedia
PUT_LOOP=$CARGO_TARGET_DIR/release/examples/put_loop
OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench/$(date -u +%Y%m%dT%H%M%SZ)}
DOC=${BENCH_DOC:-$REPO/docs/benchmarks.md}
CACHE_CONTROL="public, max-age=315576000, immutable"
AK=mastomedia-test
SK=mastomedia-test-secret
mkdir -p "$OUT"
T_START=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/log.txt" >&2; }

# ---------------------------------------------------------------- build and peers
log "scale $SCALE; output in $OUT"
log "cargo build --release --locked (mastomedia, examples/put_loop)"
cargo build --release --locked --quiet --bin mastomedia --example put_loop

source scripts/services.sh >/dev/null 2>&1 || { source scripts/services.sh; exit 1; }
PY=$MASTOMEDIA_TEST_PYTHON
PG_BASE=${MASTOMEDIA_TEST_DATABASE_URL%/*}

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v rclone >/dev/null || [ ! -x /usr/bin/time ]; then
    log "installing rclone and GNU time (apt-get)"
    apt_install rclone time
fi
need_venv=0
if want prune || tool awscli || tool s3cmd; then need_venv=1; fi
if [ $need_venv = 1 ] && ! { [ -x "$PEER_VENV/bin/aws" ] && [ -x "$PEER_VENV/bin/s3cmd" ]; }; then
    log "installing awscli and s3cmd into $PEER_VENV (pip)"
    rm -rf "$PEER_VENV"
    python3 -m venv "$PEER_VENV"
    "$PEER_VENV/bin/pip" install -q --disable-pip-version-check awscli s3cmd
fi
if [ ! -x "$S3S_BIN" ]; then
    log "installing s3s-fs 0.14.1 into $S3S_ROOT (cargo install, 3-4 min cold)"
    cargo install s3s-fs@0.14.1 --features binary --locked --root "$S3S_ROOT" \
        --target-dir "$CACHE/s3s-fs-build" --quiet
fi
AWS=$PEER_VENV/bin/aws
S3CMD=$PEER_VENV/bin/s3cmd

# ---------------------------------------------------------------- machine
{
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel=$(uname -sr)"
    echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "rustc=$(rustc --version)"
    echo "mastomedia=$("$BIN" --version)"
    echo "rclone=$(rclone version 2>/dev/null | head -n 1)"
    echo "awscli=$("$AWS" --version 2>&1 | head -n 1 || echo 'not installed')"
    echo "s3cmd=$("$S3CMD" --version 2>&1 | head -n 1 || echo 'not installed')"
    echo "s3s-fs=0.14.1 ($S3S_BIN)"
    echo "moto=$("$PY" -c 'import moto; print(moto.__version__)')"
    echo "postgres=$(psql "$PG_BASE/postgres" -XtAc 'SHOW server_version')"
    echo "scale=$SCALE"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

# ---------------------------------------------------------------- servers
S3S_PID= S3_PID= S3S_MOUNTED=
# s3s-fs keeps its objects in a folder. On disk (ext4 here) 32 writers contend for the
# inode allocator and the journal, and the time of every run moves with what the runs
# before it left behind; in memory the server costs half the CPU and the tool is what is
# measured (docs/benchmarks.md's analysis). BENCH_S3S_DATA=tmpfs (default): a tmpfs of
# our own, mounted as root with no inode limit (the 1M-file memory line needs about 3M
# inodes: s3s-fs writes two JSON files per object); BENCH_S3S_DATA=disk: $OUT/s3s-data.
S3S_DATA=$OUT/s3s-data
S3S_WHERE=disk
if [ "${BENCH_S3S_DATA:-tmpfs}" = tmpfs ]; then
    mkdir -p "$S3S_DATA"
    if mount -t tmpfs -o size=90%,nr_inodes=0,mode=0700 mastomedia-bench "$S3S_DATA" 2>/dev/null; then
        S3S_MOUNTED=1 S3S_WHERE=tmpfs
    else
        echo "run.sh: cannot mount a tmpfs at $S3S_DATA (not root?); s3s-fs keeps its objects on disk" >&2
    fi
elif [ "${BENCH_S3S_DATA}" != disk ]; then
    echo "BENCH_S3S_DATA must be tmpfs or disk, not '$BENCH_S3S_DATA'" >&2; exit 2
fi
echo "s3s_data=$S3S_WHERE" >>"$OUT/machine.txt"
cleanup() {
    if [ -n "$S3S_PID" ]; then kill "$S3S_PID" 2>/dev/null || true; wait "$S3S_PID" 2>/dev/null || true; fi
    if [ -n "$S3_PID" ]; then kill "$S3_PID" 2>/dev/null || true; fi
    if [ -n "$S3S_MOUNTED" ]; then umount "$S3S_DATA" 2>/dev/null || umount -l "$S3S_DATA" || true; fi
    rm -rf "$S3S_DATA" "$OUT/tree" "$OUT/tree-mem"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$S3S_DATA"
S3S_PORT=$(free_port)
"$S3S_BIN" --host 127.0.0.1 --port "$S3S_PORT" --access-key "$AK" --secret-key "$SK" "$S3S_DATA" \
    >"$OUT/s3s-fs.log" 2>&1 &
S3S_PID=$!
S3S=http://127.0.0.1:$S3S_PORT
# moto with its listing made proportional to the page (scripts/bench/fastmoto.py, checked
# against moto's own method first); the proxy and everything else as in the tests.
"$PY" scripts/bench/fastmoto.py --self-test >"$OUT/fastmoto-self-test.txt"
"$PY" scripts/bench/fastmoto.py --no-stdin-watch --port-file "$OUT/s3server.json" \
    >"$OUT/s3server.log" 2>&1 &
S3_PID=$!
for _ in $(seq 1 100); do [ -s "$OUT/s3server.json" ] && break; sleep 0.2; done
[ -s "$OUT/s3server.json" ] || { cat "$OUT/s3server.log"; exit 1; }
MOTO=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["moto"])' "$OUT/s3server.json")
PROXY=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxy"])' "$OUT/s3server.json")
for _ in $(seq 1 50); do curl -s -o /dev/null "$S3S/" && break; sleep 0.1; done
log "servers: s3s-fs $S3S (pid $S3S_PID), moto $MOTO behind proxy $PROXY (pid $S3_PID)"

# ---------------------------------------------------------------- helpers
# s3s-fs's CPU so far in clock ticks (utime + stime of /proc/PID/stat; fields after the
# command name, which is in parentheses).
s3s_cpu_ticks() { sed 's/.*) //' "/proc/$S3S_PID/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }
# measure NAME CMD...: runs CMD under /usr/bin/time -v; NAME.out/.err/.time/.rc/.load in $OUT.
measure() {
    local name=$1 rc=0
    shift
    cut -d' ' -f1-3 /proc/loadavg >"$OUT/$name.load"
    printf '%q ' "$@" >"$OUT/$name.cmd"
    local s0 s1
    s0=$(s3s_cpu_ticks)
    /usr/bin/time -v -o "$OUT/$name.time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || rc=$?
    s1=$(s3s_cpu_ticks)
    echo "$rc" >"$OUT/$name.rc"
    # The server's CPU seconds (user + sys) during the command: on two shared cores the
    # server's work is part of every tool's wall time.
    echo "$s0 $s1 $(getconf CLK_TCK)" | awk '{printf "%.2f\n", ($2 - $1) / $3}' >"$OUT/$name.s3s"
    if [ "$rc" -ne 0 ]; then log "$name exited with $rc: $(tail -n 3 "$OUT/$name.err" | tr '\n' ' ')"; fi
    return 0
}
stats_reset() { curl -sf -X DELETE "$PROXY/__stats/$1" >/dev/null; }
stats_get() { curl -sf "$PROXY/__stats/$1" >"$OUT/$2.stats"; }
s3count() { "$PY" scripts/bench/s3tool.py count "$1" "$2"; }
# Environments for the peers, as command prefixes (`measure` runs a program, not a function).
AWS_ENV=(env AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_DEFAULT_REGION=us-east-1
    AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required)
rclone_env() {  # sets RCLONE_ENV: the remote "bench" at $1
    RCLONE_ENV=(env -u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other
        RCLONE_CONFIG_BENCH_ENDPOINT="$1" RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$AK
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$SK RCLONE_CONFIG_BENCH_REGION=us-east-1
        RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true)
}
write_env() {  # $1 file, $2 endpoint, $3 bucket, $4 database url
    cat >"$1" <<EOF
DATABASE_URL=$4
S3_ENABLED=true
S3_BUCKET=$3
S3_REGION=us-east-1
S3_ENDPOINT=$2
S3_PROTOCOL=http
AWS_ACCESS_KEY_ID=$AK
AWS_SECRET_ACCESS_KEY=$SK
EOF
}
# An empty bucket $1. s3s-fs keeps each object's metadata beside the buckets, in
# `.bucket-<name>.object-<key>.{internal,metadata}.json` (names in unpadded URL-safe
# base64): those go too, or the folder grows by two files per object uploaded and every
# later tool pays for the bigger folder.
s3s_bucket() {
    local enc
    enc=$(printf %s "$1" | base64 -w0 | tr '+/' '-_' | tr -d '=')
    rm -rf "${S3S_DATA:?}/$1"
    find "$S3S_DATA" -maxdepth 1 -name ".bucket-$enc.*" -delete
    mkdir -p "$S3S_DATA/$1"
}
fresh_db() {
    psql "$PG_BASE/postgres" -Xq -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" \
        -c "CREATE DATABASE $1" 2>/dev/null
    psql "$PG_BASE/$1" -Xq -v ON_ERROR_STOP=1 -f tests/fixtures/mastodon-4.6.sql >/dev/null
}
cat >"$OUT/s3cfg-s3s" <<EOF
[default]
access_key = $AK
secret_key = $SK
host_base = ${S3S#http://}
host_bucket = ${S3S#http://}
use_https = False
signature_v2 = False
bucket_location = us-east-1
EOF
sed "s|${S3S#http://}|${PROXY#http://}|g" "$OUT/s3cfg-s3s" >"$OUT/s3cfg-proxy"

# ---------------------------------------------------------------- migrate and limit
if want migrate; then
log "migrate: generating $MIG_FILES files with Mastodon's size mix"
"$PY" scripts/bench/gen_tree.py "$OUT/tree" "$MIG_FILES" >"$OUT/tree.json"
log "tree: $(cat "$OUT/tree.json")"

# ROUNDS rounds, one after the other, of every tool at every concurrency: a slow spell of
# the shared machine lands in one round of each tool, not in every run of one tool. The
# streamed put_loop variants, aws s3 sync, s3cmd and the profiles run once (round 1).
for R in $(seq 1 "$ROUNDS"); do
    X=
    if [ "$R" -gt 1 ]; then X=-r$R; fi
    for C in $CONCS; do
        if tool mastomedia; then
        b=mig-mastomedia-$C
        s3s_bucket "$b"
        write_env "$OUT/env-$b" "$S3S" "$b" "postgres://unused@127.0.0.1:9/unused"
        rm -f "$OUT/journal-$C.sqlite"*
        log "migrate c=$C$X: mastomedia migrate --concurrency $C"
        measure "migrate-mastomedia-$C$X" "$BIN" -q --env-file "$OUT/env-$b" migrate --from "$OUT/tree" \
            --journal "$OUT/journal-$C.sqlite" --concurrency "$C" --json
        s3count "$S3S" "$b" >"$OUT/migrate-mastomedia-$C$X.count"
        s3s_bucket "$b"
        if [ "${BENCH_MIGRATE_PERF:-0}" = 1 ] && [ "$R" = 1 ]; then
            rm -f "$OUT/journal-$C.sqlite"*
            log "migrate c=$C: perf record -g of mastomedia migrate"
            perf record -g -o "$OUT/migrate-mastomedia-$C.perf.data" -- "$BIN" -q \
                --env-file "$OUT/env-$b" migrate --from "$OUT/tree" \
                --journal "$OUT/journal-$C.sqlite" --concurrency "$C" --json \
                >/dev/null 2>"$OUT/migrate-mastomedia-$C.perf.err" || true
            s3s_bucket "$b"
            rm -f "$OUT/journal-$C.sqlite"*
            log "migrate c=$C: strace -c -f of mastomedia migrate"
            strace -c -f -o "$OUT/migrate-mastomedia-$C.strace" "$BIN" -q --env-file "$OUT/env-$b" \
                migrate --from "$OUT/tree" --journal "$OUT/journal-$C.sqlite" --concurrency "$C" \
                --json >/dev/null 2>&1 || true
            s3s_bucket "$b"
        fi
        fi

        # The same migrate with rclone's upload cutoff (200 MiB) as its multipart threshold:
        # one PutObject per file, the requests rclone and the limit line send. At Mastodon's
        # 15 MiB the tree's videos above it go as multipart uploads, which s3s-fs completes by
        # writing and hashing every such video a second time on the same two cores.
        if tool mastomedia-single; then
        b=mig-mastomedia-single-$C
        s3s_bucket "$b"
        write_env "$OUT/env-$b" "$S3S" "$b" "postgres://unused@127.0.0.1:9/unused"
        rm -f "$OUT/journal-single-$C.sqlite"*
        log "migrate c=$C$X: mastomedia migrate --concurrency $C --multipart-threshold 209715200"
        measure "migrate-mastomedia-single-$C$X" "$BIN" -q --env-file "$OUT/env-$b" migrate \
            --from "$OUT/tree" --journal "$OUT/journal-single-$C.sqlite" --concurrency "$C" \
            --multipart-threshold 209715200 --json
        s3count "$S3S" "$b" >"$OUT/migrate-mastomedia-single-$C$X.count"
        s3s_bucket "$b"
        fi

        if tool putloop; then
        b=mig-putloop-$C
        s3s_bucket "$b"
        log "limit c=$C$X: examples/put_loop"
        measure "migrate-putloop-$C$X" env AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK \
            "$PUT_LOOP" "$S3S" "$b" "$OUT/tree" "$C"
        s3count "$S3S" "$b" >"$OUT/migrate-putloop-$C$X.count"
        s3s_bucket "$b"
        fi
        b=mig-putloop-$C
        # The same loop with the body streamed from the file by the SDK, 4 KiB reads (the
        # SDK's default, what mastomedia's upload uses) and 256 KiB reads.
        for buf in 4096 262144; do
            tool putloop-stream && [ "$R" = 1 ] || continue
            log "limit c=$C: examples/put_loop, streamed in reads of $buf bytes"
            measure "migrate-putloop$buf-$C" env AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK \
                "$PUT_LOOP" "$S3S" "$b" "$OUT/tree" "$C" "$buf"
            s3count "$S3S" "$b" >"$OUT/migrate-putloop$buf-$C.count"
            s3s_bucket "$b"
        done

        if tool rclone; then
        b=mig-rclone-$C
        s3s_bucket "$b"
        log "migrate c=$C$X: rclone copy"
        rclone_env "$S3S"
        measure "migrate-rclone-$C$X" "${RCLONE_ENV[@]}" rclone copy "$OUT/tree" "bench:$b" \
            --s3-no-head --s3-no-check-bucket --s3-acl public-read \
            --header-upload "Cache-Control: $CACHE_CONTROL" --transfers "$C" --checkers "$C"
        s3count "$S3S" "$b" >"$OUT/migrate-rclone-$C$X.count"
        s3s_bucket "$b"
        fi

        if tool awscli && [ "$R" = 1 ]; then
        b=mig-awscli-$C
        s3s_bucket "$b"
        printf '[default]\ns3 =\n  max_concurrent_requests = %s\n' "$C" >"$OUT/aws-config-$C"
        log "migrate c=$C: aws s3 sync (max_concurrent_requests = $C)"
        measure "migrate-awscli-$C" "${AWS_ENV[@]}" AWS_CONFIG_FILE="$OUT/aws-config-$C" "$AWS" \
            --endpoint-url "$S3S" s3 sync "$OUT/tree" "s3://$b" --acl public-read \
            --cache-control "$CACHE_CONTROL" --only-show-errors
        s3count "$S3S" "$b" >"$OUT/migrate-awscli-$C.count"
        s3s_bucket "$b"
        fi
    done
done
# s3cmd has no concurrency setting: one upload at a time; measured once.
if tool s3cmd; then
b=mig-s3cmd-1
s3s_bucket "$b"
log "migrate: s3cmd sync (one upload at a time)"
measure "migrate-s3cmd-1" "$S3CMD" -c "$OUT/s3cfg-s3s" sync --acl-public \
    --add-header "Cache-Control: $CACHE_CONTROL" --guess-mime-type --no-check-md5 --quiet \
    "$OUT/tree/" "s3://$b/"
s3count "$S3S" "$b" >"$OUT/migrate-s3cmd-1.count"
s3s_bucket "$b"
fi
rm -rf "$OUT/tree"
fi

# ---------------------------------------------------------------- du and prune (moto + proxy)
# One seed after the other (BENCH_PRUNE_SEEDS, default "busy sparse"), each on a fresh
# database and a fresh moto (POST /moto-api/reset), PRUNE_ROWS prune candidates each:
#   busy    scripts/seed.py --media-days 7:8: every media row created within one day just
#           past the 7-day cutoff (issue 11's "10k+ candidates created within a day");
#   sparse  seed.py's usual spread over 0-420 days (scripts/bench-prune.sh's shape).
# mastomedia's bucket holds every object of the seed (candidates, newer and local media,
# avatars, emoji, cards: prune refuses a bucket where none of the newest files the
# database names exist), each peer's bucket the candidates' objects only (the peers
# delete the whole bucket); 100-2000 bytes each, put straight into moto's backend through
# the proxy's control API (seed.py --bulk-proxy: ~5000 objects/s instead of ~250 through
# PutObject). The seed's summary (objects, bytes, small styles left missing) is what
# prune's and du's counts are checked against.
# du runs on the first seed's bucket before its prune. The loop peer runs over every
# k-th key, at most BENCH_PRUNE_LOOP_KEYS of them (0: all): at ~100 keys/s on moto, all
# of 200k keys would take half an hour and only repeat the same two requests per key.
# S3_READ_TIMEOUT=60: moto serialises a 1000-key listing page in ~0.6 s of one core, so
# parallel pages on a loaded machine pass the default 5 s and get retried, which counts
# moto's slowness as requests.
DB=mastomedia_bench_run_$$  # per run: two runs on one machine must not drop each other's database
DB_URL=$PG_BASE/$DB
BUCKET=bench-prune
if want prune; then
{
    echo "rows=$PRUNE_ROWS"
    echo "seeds=$PRUNE_SEEDS"
    echo "loop_keys=$PRUNE_LOOP_KEYS"
    echo "du_seed=${PRUNE_SEEDS%% *}"
    echo "du_latency_ms=$DU_LATENCY"
    echo "server=moto $("$PY" -c 'import moto; print(moto.__version__)') (scripts/bench/fastmoto.py) behind tests/support/s3server.py's proxy"
} >"$OUT/prune.txt"
for SEED in $PRUNE_SEEDS; do
    case $SEED in
        busy) shape=(--media-days 7:8) ;;
        sparse) shape=() ;;
        *) echo "BENCH_PRUNE_SEEDS: busy and/or sparse, not '$SEED'" >&2; exit 2 ;;
    esac
    curl -sf -X POST "$MOTO/moto-api/reset" >/dev/null
    fresh_db "$DB"
    log "prune ($SEED): seeding $PRUNE_ROWS candidate rows (scripts/seed.py ${shape[*]:-}; every object, bulk; the candidates' in two more buckets)"
    "$PY" scripts/seed.py --database-url "$DB_URL" --endpoint "$MOTO" --bucket "$BUCKET" \
        --create-bucket --candidates "$PRUNE_ROWS" --days 7 "${shape[@]}" --objects all \
        --seed 7 --accounts 1000 --quiet --bulk-proxy "$PROXY" --object-sizes 100:2000 \
        --summary-json "$OUT/seed-$SEED.json" --keys-out "$OUT/keys-$SEED.txt" \
        --also-bucket "$BUCKET-loop" --also-bucket "$BUCKET-s3cmd" >"$OUT/seed-$SEED.out"
    log "$(cat "$OUT/seed-$SEED.out")"
    write_env "$OUT/env-prune" "$PROXY" "$BUCKET" "$DB_URL"
    echo "S3_READ_TIMEOUT=60" >>"$OUT/env-prune"

    if [ "$SEED" = "${PRUNE_SEEDS%% *}" ]; then
        log "du: mastomedia du, rclone size, aws s3 ls --recursive --summarize on s3://$BUCKET ($SEED seed)"
        stats_reset "$BUCKET"
        measure du-mastomedia "$BIN" -q --env-file "$OUT/env-prune" du --json
        stats_get "$BUCKET" du-mastomedia
        stats_reset "$BUCKET"
        rclone_env "$PROXY"
        measure du-rclone "${RCLONE_ENV[@]}" rclone size "bench:$BUCKET" --json
        stats_get "$BUCKET" du-rclone
        stats_reset "$BUCKET"
        measure du-awscli "${AWS_ENV[@]}" "$AWS" --endpoint-url "$PROXY" s3 ls "s3://$BUCKET" \
            --recursive --summarize
        stats_get "$BUCKET" du-awscli
        # The same three through the same proxy with DU_LATENCY ms added to each request
        # of this bucket (a provider across the internet; the per-bucket fault field
        # latency_ms of tests/support/s3server.py), where parallel listing can pay off.
        log "du: the same with ${DU_LATENCY} ms added per request (proxy fault latency_ms)"
        curl -sf -X PUT "$PROXY/__faults/$BUCKET" -d "{\"latency_ms\": $DU_LATENCY}" >/dev/null
        stats_reset "$BUCKET"
        measure du-lat-mastomedia "$BIN" -q --env-file "$OUT/env-prune" du --json
        stats_get "$BUCKET" du-lat-mastomedia
        stats_reset "$BUCKET"
        measure du-lat-rclone "${RCLONE_ENV[@]}" rclone size "bench:$BUCKET" --json
        stats_get "$BUCKET" du-lat-rclone
        stats_reset "$BUCKET"
        measure du-lat-awscli "${AWS_ENV[@]}" "$AWS" --endpoint-url "$PROXY" s3 ls "s3://$BUCKET" \
            --recursive --summarize
        stats_get "$BUCKET" du-lat-awscli
        curl -sf -X DELETE "$PROXY/__faults/$BUCKET" >/dev/null
    fi

    P=prune-$SEED
    log "prune ($SEED): mastomedia prune --days 7 --concurrency $PRUNE_CONC"
    stats_reset "$BUCKET"
    measure "$P-mastomedia" "$BIN" -q --env-file "$OUT/env-prune" prune --json --days 7 \
        --concurrency "$PRUNE_CONC"
    stats_get "$BUCKET" "$P-mastomedia"
    s3count "$MOTO" "$BUCKET" >"$OUT/$P-mastomedia.count"

    all=$(wc -l <"$OUT/keys-$SEED.txt")
    every=1
    if [ "$PRUNE_LOOP_KEYS" -gt 0 ] && [ "$all" -gt "$PRUNE_LOOP_KEYS" ]; then
        every=$(((all + PRUNE_LOOP_KEYS - 1) / PRUNE_LOOP_KEYS))
    fi
    awk -v k="$every" '(NR - 1) % k == 0' "$OUT/keys-$SEED.txt" >"$OUT/keys-$SEED-loop.txt"
    echo "{\"keys_all\": $all, \"every\": $every, \"keys_run\": $(wc -l <"$OUT/keys-$SEED-loop.txt")}" \
        >"$OUT/$P-loop.sample"
    log "prune ($SEED): HEAD + DELETE per key, $PRUNE_CONC in flight, every ${every}th of $all keys"
    stats_reset "$BUCKET-loop"
    measure "$P-loop" "$PY" scripts/bench/s3tool.py head-delete "$PROXY" "$BUCKET-loop" \
        "$OUT/keys-$SEED-loop.txt" "$PRUNE_CONC"
    stats_get "$BUCKET-loop" "$P-loop"

    log "prune ($SEED): s3cmd del --recursive (DeleteObjects, 1000 keys per request)"
    stats_reset "$BUCKET-s3cmd"
    measure "$P-s3cmd" "$S3CMD" -c "$OUT/s3cfg-proxy" del --recursive --force "s3://$BUCKET-s3cmd"
    stats_get "$BUCKET-s3cmd" "$P-s3cmd"
    s3count "$MOTO" "$BUCKET-s3cmd" >"$OUT/$P-s3cmd.count"
done
curl -sf -X POST "$MOTO/moto-api/reset" >/dev/null
fi

# ---------------------------------------------------------------- memory
# N remote media rows older than the cutoff, every object already gone (nothing uploaded):
# the run pages the database, sizes through listings and clears every row.
gen_rows_sql() {  # $1 = rows
    # Snowflake ids (ms << 16 | sequence) spread over the 60 days before now; 1 in 10 rows
    # local (remote_url ''), 1 in 5 already pruned (file_file_name NULL), the rest remote
    # media with a stored file (cache/ keys, schema version 1).
    cat <<EOF
INSERT INTO accounts (id, username, domain, created_at, updated_at)
VALUES (1, 'remote', 'remote.example', now(), now()) ON CONFLICT DO NOTHING;
INSERT INTO media_attachments (id, account_id, remote_url, file_file_name, file_content_type,
    file_file_size, file_updated_at, file_storage_schema_version, type, created_at, updated_at)
SELECT ((extract(epoch FROM t) * 1000)::bigint << 16) | (g % 65536), 1,
       CASE WHEN g % 10 = 0 THEN '' ELSE 'https://remote.example/m/' || g || '.jpeg' END,
       CASE WHEN g % 5 = 1 THEN NULL ELSE substr(md5(g::text), 1, 16) || '.jpeg' END,
       'image/jpeg', 40000 + g % 1000, t, 1, 0, t, t
FROM (SELECT g, now() AT TIME ZONE 'UTC' - (g::double precision / $1 * 60) * interval '1 day' AS t
      FROM generate_series(1, $1) g) s;
ANALYZE media_attachments;
EOF
}
if want memory; then
# On s3s-fs: moto lists about 100 folders/s here, s3s-fs an empty bucket far faster, and
# peak RSS, not requests, is this line's measure.
s3s_bucket bench-mem
for N in $MEM_ROWS; do
    fresh_db "$DB"
    psql "$DB_URL" -Xq -v ON_ERROR_STOP=1 -f - >/dev/null <<<"$(gen_rows_sql "$N")"
    write_env "$OUT/env-mem" "$S3S" bench-mem "$DB_URL"
    # prune refuses a bucket where none of the newest files the database names exist
    # (src/inventory/owners.rs, the ownership check): the originals of the 20 newest rows,
    # none of them a candidate (they are days inside the cutoff), are put straight into
    # s3s-fs's folder, as s3s_bucket makes the bucket.
    psql "$DB_URL" -XtAc "SELECT CASE WHEN remote_url <> '' THEN 'cache/' ELSE '' END
        || 'media_attachments/files/' || regexp_replace(lpad(id::text, 18, '0'), '(...)', '\1/', 'g')
        || 'original/' || file_file_name FROM media_attachments
        WHERE file_file_name IS NOT NULL ORDER BY id DESC LIMIT 20" |
        while read -r key; do
            mkdir -p "$S3S_DATA/bench-mem/$(dirname "$key")"
            printf 'mastomedia bench\n' >"$S3S_DATA/bench-mem/$key"
        done
    log "memory: prune over $N rows ($(psql "$DB_URL" -XtAc "SELECT count(*) FROM media_attachments WHERE remote_url <> '' AND file_file_name IS NOT NULL AND created_at < now() AT TIME ZONE 'UTC' - interval '7 days'") candidates)"
    measure "mem-prune-$N" "$BIN" -q --env-file "$OUT/env-mem" prune --json --days 7 \
        --concurrency "$PRUNE_CONC"
done
for N in $MEM_FILES; do
    log "memory: migrate of $N files of 16 bytes to s3s-fs"
    rm -rf "$OUT/tree-mem"
    "$PY" scripts/bench/gen_tree.py "$OUT/tree-mem" "$N" --tiny >"$OUT/tree-mem-$N.json"
    b=mem-migrate
    s3s_bucket "$b"
    write_env "$OUT/env-$b" "$S3S" "$b" "postgres://unused@127.0.0.1:9/unused"
    rm -f "$OUT/journal-mem.sqlite"*
    measure "mem-migrate-$N" "$BIN" -q --env-file "$OUT/env-$b" migrate --from "$OUT/tree-mem" \
        --journal "$OUT/journal-mem.sqlite" --concurrency 32 --json
    s3s_bucket "$b"
done
rm -rf "$OUT/tree-mem"
fi

# ---------------------------------------------------------------- the candidate query's plan
if want plan; then
PLAN_DB=mastomedia_bench_plan
log "plan: $PLAN_ROWS rows in media_attachments (Mastodon 4.6 indexes, tests/fixtures/mastodon-4.6.sql)"
fresh_db "$PLAN_DB"
psql "$PG_BASE/$PLAN_DB" -Xq -v ON_ERROR_STOP=1 -f - >/dev/null <<<"$(gen_rows_sql "$PLAN_ROWS")"
psql "$PG_BASE/$PLAN_DB" -XtAc "SELECT indexdef FROM pg_indexes WHERE tablename = 'media_attachments' ORDER BY indexname" >"$OUT/plan-indexes.txt"
# The cursor query of src/inventory/mod.rs (Selection::Media, page size 1000 as
# src/pool/mod.rs): $1 the keyset position, $2 the cutoff, $3 the id bound one day past it.
plan_sql() {  # $1 = keyset position (SQL), $2 = plan_cache_mode
    cat <<EOF
SET client_min_messages = warning;
SET plan_cache_mode = $2;
SELECT ($1) AS pos \\gset
PREPARE page(bigint, timestamp, bigint) AS
SELECT m.id, (m.status_id IS NOT NULL OR m.scheduled_status_id IS NOT NULL) AS attached,
       m.file_file_name, m.file_content_type, COALESCE(m.file_file_size, 0)::bigint,
       m.file_storage_schema_version::integer, m.thumbnail_file_name, m.thumbnail_content_type,
       COALESCE(m.thumbnail_file_size, 0)::bigint, m.thumbnail_storage_schema_version::integer
FROM media_attachments m
WHERE m.id > \$1 AND m.remote_url <> '' AND m.created_at <= \$2 AND m.id < \$3
  AND (NULLIF(m.file_file_name, '') IS NOT NULL OR NULLIF(m.thumbnail_file_name, '') IS NOT NULL)
ORDER BY m.id LIMIT 1000;
EXPLAIN (ANALYZE, BUFFERS)
EXECUTE page(:pos, now() AT TIME ZONE 'UTC' - interval '7 days',
             (extract(epoch FROM now() - interval '6 days') * 1000)::bigint << 16);
EOF
}
first="'-9223372036854775808'::bigint"
middle="SELECT id FROM media_attachments ORDER BY id OFFSET $((PLAN_ROWS / 2)) LIMIT 1"
psql "$PG_BASE/$PLAN_DB" -Xq -f - >"$OUT/plan-first.txt" 2>&1 <<<"$(plan_sql "$first" auto)"
psql "$PG_BASE/$PLAN_DB" -Xq -f - >"$OUT/plan-middle.txt" 2>&1 <<<"$(plan_sql "$middle" auto)"
psql "$PG_BASE/$PLAN_DB" -Xq -f - >"$OUT/plan-middle-generic.txt" 2>&1 <<<"$(plan_sql "$middle" force_generic_plan)"
# An instance pruned every day: everything older than 8 days was cleared by the previous
# runs, so the first page walks those rows (the query has no lower bound) before a candidate.
psql "$PG_BASE/$PLAN_DB" -Xq -v ON_ERROR_STOP=1 -c "UPDATE media_attachments SET file_file_name = NULL WHERE created_at < now() AT TIME ZONE 'UTC' - interval '8 days'" -c "VACUUM ANALYZE media_attachments"
psql "$PG_BASE/$PLAN_DB" -Xq -f - >"$OUT/plan-pruned-daily.txt" 2>&1 <<<"$(plan_sql "$first" auto)"
psql "$PG_BASE/postgres" -Xq -c "DROP DATABASE IF EXISTS $PLAN_DB WITH (FORCE)"
fi
psql "$PG_BASE/postgres" -Xq -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"

echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "seconds_total=$(($(date +%s) - T_START))" >>"$OUT/machine.txt"
echo "concurrency=$CONCS" >>"$OUT/machine.txt"
echo "rounds=$ROUNDS" >>"$OUT/machine.txt"
echo "prune_concurrency=$PRUNE_CONC" >>"$OUT/machine.txt"
echo "memory_rows=$MEM_ROWS" >>"$OUT/machine.txt"
echo "memory_files=$MEM_FILES" >>"$OUT/machine.txt"
echo "plan_rows=$PLAN_ROWS" >>"$OUT/machine.txt"
echo "lines=$LINES" >>"$OUT/machine.txt"
log "writing $DOC"
"$PY" scripts/bench/report.py "$OUT" "$DOC"
log "done in $(($(date +%s) - T_START)) s"
