#!/bin/bash
# The packages and venvs playbooks/site.yml installs for the README stack (redis + workers + beat + flower on one
# host), as the plain script a user would write instead: the baseline of issue 12 §2 ("first converge <= 1.0x the
# script"). benchmarks/converge_bench.py runs it over SSH on a fresh container and times it. It writes nothing else
# (no users, config or services beyond what the packages do themselves), so the difference to the converge is the
# collection's own work and its round trips.
#
#   PIP_CERT=/path/ca.crt bash converge_script.sh CELERY_VERSION FLOWER_VERSION
#
# PIP_CERT: the same CA bundle the roles put into /etc/pip.conf (baseline_ca_certificates), for PyPI behind a
# TLS-intercepting proxy. apt uses the image's sources.list, as the roles do.
set -eu
celery_version=${1:?usage: converge_script.sh CELERY_VERSION FLOWER_VERSION}
flower_version=${2:?usage: converge_script.sh CELERY_VERSION FLOWER_VERSION}
export DEBIAN_FRONTEND=noninteractive

# "step NAME SECONDS" on stdout after each step: where the script's time goes (converge_bench.py reads it).
last=$EPOCHREALTIME
step() {
    local now=$EPOCHREALTIME
    awk -v name="$1" -v a="$last" -v b="$now" 'BEGIN { printf "step %s %.2f\n", name, b - a }'
    last=$now
}

# One transaction for what the roles install in five: baseline (timezone.yml: tzdata, systemd-timesyncd;
# python.yml: baseline_python_packages + libffi-dev), redis (install.yml: redis-server), worker (install.yml:
# supervisor, python3-venv, python3-packaging), flower (install.yml: nginx, openssl, python3-venv, python3-packaging).
apt-get update -qq
step apt-update
apt-get install -y -qq tzdata systemd-timesyncd python3-venv python3-dev build-essential libffi-dev \
    redis-server supervisor python3-packaging nginx openssl >/dev/null
step apt-install

# roles/worker/tasks/venv.yml (celery[redis], no pool extras for prefork) and roles/flower/tasks/venv.yml.
python3 -m venv /opt/celery/venv
/opt/celery/venv/bin/pip install -q "celery[redis]==$celery_version"
step celery-venv
python3 -m venv /opt/flower/venv
/opt/flower/venv/bin/pip install -q "flower==$flower_version" "celery[redis]==$celery_version"
step flower-venv
