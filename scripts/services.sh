#!/usr/bin/env bash
# Ensure the services mastomedia's tests need exist and run, idempotently.
#
#   source scripts/services.sh   # exports the variables below into this shell
#   scripts/services.sh          # same checks; prints the variables
#
# - PostgreSQL reachable on 127.0.0.1:5432 as user postgres without a password
#   (installs Debian's postgresql, starts the cluster, adds a trust line if needed).
# - Debian's pebble (ACME test server + mock DNS) for the certificate tests.
# - Debian's pgbouncer (/usr/sbin/pgbouncer) for the transaction-pooling tests.
# - Debian's chromium (headless) for the test that renders `du --html`.
# - A Python venv with moto (the local S3 server used by tests/support/s3server.py) and
#   prometheus-client (its text-format parser reads --metrics-file in tests/it/metrics.rs),
#   at ${MASTOMEDIA_VENV:-$HOME/.cache/mastomedia/venv}.
#
# Exports MASTOMEDIA_TEST_DATABASE_URL (unless already set) and MASTOMEDIA_TEST_PYTHON.
# Quiet on success apart from one line per service; on failure prints the log of the
# failing step and returns/exits non-zero. Must run as root on a Debian machine.
# When sourced it does not change the caller's shell options.
# MASTOMEDIA_PG_PORT (default 5432) picks another cluster; meant for testing this script.

_mm_log() { printf 'services: %s\n' "$*" >&2; }

# Run a command with its output captured; show the output only when it fails.
_mm_quiet() {
    local log rc
    log=$(mktemp)
    "$@" >"$log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ]; then
        _mm_log "command failed ($rc): $*"
        tail -n 60 "$log" >&2
    fi
    rm -f "$log"
    return "$rc"
}

_mm_apt_updated=
_mm_apt_install() {
    if [ -z "$_mm_apt_updated" ]; then
        _mm_quiet env DEBIAN_FRONTEND=noninteractive apt-get update || return 1
        _mm_apt_updated=1
    fi
    _mm_quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

_mm_pg_server_installed() {
    command -v psql >/dev/null 2>&1 &&
        command -v pg_lsclusters >/dev/null 2>&1 &&
        command -v pg_isready >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

_mm_pg_trust_ok() {
    PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -w -XtAq \
        -c 'SELECT 1' >/dev/null 2>&1
}

_mm_postgres() {
    if ! _mm_pg_server_installed; then
        _mm_log "installing postgresql (apt-get)"
        _mm_apt_install postgresql || return 1
    fi

    local want_port="${MASTOMEDIA_PG_PORT:-5432}"
    local clusters ver name port status
    clusters=$(pg_lsclusters --no-header 2>/dev/null)
    if [ -z "$clusters" ]; then
        ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)
        _mm_log "creating cluster $ver/main"
        _mm_quiet pg_createcluster --port "$want_port" "$ver" main || return 1
        clusters=$(pg_lsclusters --no-header)
    fi

    # The cluster on the wanted port, else the first one.
    read -r ver name port status _ < <(printf '%s\n' "$clusters" | awk -v p="$want_port" '$3 == p' | head -n 1)
    if [ -z "${ver:-}" ]; then
        read -r ver name port status _ < <(printf '%s\n' "$clusters" | head -n 1)
        _mm_log "warning: no cluster on port $want_port; using $ver/$name on port $port"
    fi
    case "$status" in
        online*) ;;
        *) _mm_quiet pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || return 1 ;;
    esac

    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p "$port" && break
        sleep 0.5
    done
    if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
        _mm_log "postgres $ver/$name on 127.0.0.1:$port is not ready after 30 s"
        return 1
    fi

    if ! _mm_pg_trust_ok "$port"; then
        local hba
        hba=$(su postgres -c "psql -XtAq -p $port -c 'SHOW hba_file'" 2>/dev/null)
        [ -n "$hba" ] || hba="/etc/postgresql/$ver/$name/pg_hba.conf"
        if [ ! -f "$hba" ]; then
            _mm_log "cannot find pg_hba.conf (tried $hba)"
            return 1
        fi
        _mm_log "adding 'host all all 127.0.0.1/32 trust' to $hba"
        { printf 'host all all 127.0.0.1/32 trust\n'; cat "$hba"; } >"$hba.mastomedia.tmp" &&
            cat "$hba.mastomedia.tmp" >"$hba" && rm -f "$hba.mastomedia.tmp" || return 1
        _mm_quiet pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload || return 1
        for _ in $(seq 1 20); do
            _mm_pg_trust_ok "$port" && break
            sleep 0.5
        done
        if ! _mm_pg_trust_ok "$port"; then
            _mm_log "still cannot connect to 127.0.0.1:$port as postgres without a password"
            return 1
        fi
    fi

    export MASTOMEDIA_TEST_DATABASE_URL="${MASTOMEDIA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:$port/postgres}"
    _mm_log "postgres ready ($ver/$name): MASTOMEDIA_TEST_DATABASE_URL=$MASTOMEDIA_TEST_DATABASE_URL"
}

_mm_venv_ok() {
    [ -x "$1/bin/python" ] &&
        "$1/bin/python" -c 'import moto, moto.server, flask, flask_cors, boto3, prometheus_client' >/dev/null 2>&1
}

_mm_s3_venv() {
    local venv="${MASTOMEDIA_VENV:-${HOME:-/root}/.cache/mastomedia/venv}"
    if ! _mm_venv_ok "$venv"; then
        _mm_log "installing moto into $venv (pip)"
        if ! command -v python3 >/dev/null 2>&1; then
            _mm_apt_install python3 python3-venv || return 1
        fi
        if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
            mkdir -p "$(dirname "$venv")" || return 1
            rm -rf "$venv"
            if ! python3 -m venv "$venv" >/dev/null 2>&1; then
                # Debian's python3 needs python3-venv for ensurepip.
                rm -rf "$venv"
                _mm_apt_install python3-venv || return 1
                _mm_quiet python3 -m venv "$venv" || return 1
            fi
        fi
        _mm_quiet "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
            'moto[s3]==5.2.5' flask flask-cors 'prometheus-client==0.21.1' || return 1
        if ! _mm_venv_ok "$venv"; then
            _mm_log "moto still cannot be imported from $venv/bin/python"
            return 1
        fi
    fi
    export MASTOMEDIA_TEST_PYTHON="$venv/bin/python"
    _mm_log "s3 (moto) venv ready: MASTOMEDIA_TEST_PYTHON=$MASTOMEDIA_TEST_PYTHON"
}

# Debian's pebble package: the ACME test CA (pebble) and its mock DNS
# (pebble-challtestsrv) for the certificate tests; they start them per test process.
_mm_pebble() {
    if ! command -v pebble >/dev/null 2>&1 || ! command -v pebble-challtestsrv >/dev/null 2>&1; then
        _mm_log "installing pebble (apt-get)"
        _mm_apt_install pebble || return 1
    fi
    _mm_log "pebble ready: $(command -v pebble), $(command -v pebble-challtestsrv)"
}

# Debian's pgbouncer for the tests of Mastodon behind PgBouncer in transaction pooling
# (tests/it/pgbouncer.rs starts its own instance per test process, as the postgres user;
# the package's own system service is not needed and is stopped if the install started it).
_mm_pgbouncer() {
    if [ ! -x /usr/sbin/pgbouncer ]; then
        _mm_log "installing pgbouncer (apt-get)"
        _mm_apt_install pgbouncer || return 1
        if command -v service >/dev/null 2>&1; then
            service pgbouncer stop >/dev/null 2>&1 || true
        fi
    fi
    _mm_log "pgbouncer ready: /usr/sbin/pgbouncer"
}

# Debian's chromium, headless, for tests/it/du_html.rs: `du --html` must render in a real
# browser (`chromium --headless --dump-dom`).
_mm_chromium() {
    if ! command -v chromium >/dev/null 2>&1; then
        _mm_log "installing chromium (apt-get)"
        _mm_apt_install chromium || return 1
    fi
    _mm_log "chromium ready: $(command -v chromium)"
}

mastomedia_services() {
    _mm_postgres || return 1
    _mm_s3_venv || return 1
    _mm_pebble || return 1
    _mm_pgbouncer || return 1
    _mm_chromium || return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Executed, not sourced.
    mastomedia_services || exit 1
else
    mastomedia_services || return 1
fi
