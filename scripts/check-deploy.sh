#!/usr/bin/env bash
# Validates the deployment files of deploy/ (issue 13.4):
# - deploy/kubernetes/*.yaml against the Kubernetes API schemas, strictly (unknown fields
#   are errors), with kubernetes-validate from PyPI (pinned, in its own virtualenv at
#   ${MASTOMEDIA_DEPLOY_VENV:-$HOME/.cache/mastomedia/deploy-venv});
# - the systemd units as the package installs them, with `systemd-analyze verify`, the
#   migrate template through an instance (mastomedia-migrate@0-4.service, shard 0/4).
#   It needs the package installed (bash scripts/build-deb.sh --install), since verify
#   checks that ExecStart's /usr/bin/mastomedia and the Documentation= man pages exist.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VALIDATE_VERSION=1.37.0
K8S_VERSION=1.33.0
venv="${MASTOMEDIA_DEPLOY_VENV:-$HOME/.cache/mastomedia/deploy-venv}"
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$K8S_VALIDATE_VERSION"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "kubernetes-validate==$K8S_VALIDATE_VERSION"
fi
# The oldest Kubernetes the manifests are meant for (backoffLimitPerIndex and
# podFailurePolicy are GA in 1.33) and the newest the validator knows.
for v in "$K8S_VERSION" "$K8S_VALIDATE_VERSION"; do
    "$venv/bin/kubernetes-validate" --strict -k "$v" deploy/kubernetes/*.yaml
done

command -v systemd-analyze >/dev/null 2>&1 || {
    env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd >/dev/null
}
command -v man >/dev/null 2>&1 || {
    env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends man-db >/dev/null
}
[ -x /usr/bin/mastomedia ] || {
    echo "check-deploy: /usr/bin/mastomedia is missing; run bash scripts/build-deb.sh --install first" >&2
    exit 1
}
# The units must be the ones in deploy/systemd/ (not an older installed package).
for f in deploy/systemd/*; do
    cmp -s "$f" "/lib/systemd/system/$(basename "$f")" ||
        { echo "check-deploy: /lib/systemd/system/$(basename "$f") differs from $f" >&2; exit 1; }
done
getent passwd mastodon >/dev/null || useradd --system --create-home --home-dir /home/mastodon mastodon
out=$(systemd-analyze verify --man=yes \
    /lib/systemd/system/mastomedia-prune.service /lib/systemd/system/mastomedia-prune.timer \
    /lib/systemd/system/mastomedia-cert-renew.service /lib/systemd/system/mastomedia-cert-renew.timer \
    mastomedia-migrate@0-4.service 2>&1) || { echo "$out" >&2; exit 1; }
# verify exits 0 on some warnings; none of ours is acceptable.
if echo "$out" | grep -i mastomedia; then
    echo "check-deploy: systemd-analyze verify warned about the units above" >&2
    exit 1
fi
echo "check-deploy: deploy/kubernetes valid for Kubernetes $K8S_VERSION and $K8S_VALIDATE_VERSION; systemd units verified"
