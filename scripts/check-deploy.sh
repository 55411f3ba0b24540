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

# The chart's Secrets, by the key names of mastodon/helm-charts (charts/mastodon/
# templates/_secrets.tpl and values.yaml's existingSecretKeys): DB_USER is in
# <release>-postgres-auth beside the password, not in the <release>-env ConfigMap; a pod
# without it would log in as mastomedia's default user "mastodon" (the chart's default
# user is another one). Every container must take each of these from its Secret and key.
"$venv/bin/python" - deploy/kubernetes/*.yaml <<'PYEOF'
import sys, yaml
want = {
    "DB_USER": ("-postgres-auth", "username"),
    "DB_PASS": ("-postgres-auth", "password"),
    "AWS_ACCESS_KEY_ID": ("-s3-auth", "access-key-id"),
    "AWS_SECRET_ACCESS_KEY": ("-s3-auth", "secret-access-key"),
}
bad = []
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        spec = doc["spec"]
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        for c in spec["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            for var, (suffix, key) in want.items():
                ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
                if not (ref.get("name", "").endswith(suffix) and ref.get("key") == key):
                    bad.append(f"{path}: container {c['name']}: {var} must come from Secret <release>{suffix}, key {key}")
if bad:
    print("\n".join(["check-deploy: the manifests do not read the chart's Secrets as it writes them:"] + bad), file=sys.stderr)
    sys.exit(1)
PYEOF

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
