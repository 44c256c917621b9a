#!/usr/bin/env bash
# Everything CI runs, each step timed; ends with a pytest-style summary line.
# Usage: scripts/run-tests.sh [STEP...]
#   steps: lint unit preflight sanity build molecule:<scenario> demo (default: all)
# With no arguments the steps run in two lanes at once: the four-host `stack` scenario (the longest step, mostly
# waiting on apt and pip) with the redis and deploy scenarios, beside everything else, one after another. Each
# lane's steps do not depend on the other's.
set -uo pipefail
t0=$(date +%s)
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH ANSIBLE_COLLECTIONS_PATH=$PWD/.build/collections
export MOLECULE_GLOB='molecule/*/molecule.yml'

# Runs on one host share container names, a podman volume and the kernel's vm.* settings and swap (the privileged
# scenario changes them): a second run waits for the first instead of destroying its containers.
exec 9>"${TMPDIR:-/tmp}/vpsstack-celery-tests.lock"
if ! flock -n 9; then
  echo "run-tests: another test run holds ${TMPDIR:-/tmp}/vpsstack-celery-tests.lock; waiting for it"
  flock -w 3600 9 || { echo "run-tests: gave up waiting"; echo "0 passed, 1 failed"; exit 1; }
fi

make -s venv collection >/dev/null || { echo "run-tests: venv setup failed"; echo "0 passed, 1 failed"; exit 1; }
scripts/prepare-test-host.sh || { echo "run-tests: test host setup failed"; echo "0 passed, 1 failed"; exit 1; }

# A run killed inside the privileged scenario leaves its swap file active in the host kernel: turn it off.
awk 'NR > 1 && $1 ~ /vpsstack-swaptest/ {print $1}' /proc/swaps | xargs -r -n1 swapoff 2>/dev/null || true

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

run_step() {  # run_step STEP: runs it, records "STEP VERDICT SECONDS" in $results
  local step=$1 start rc verdict
  echo "::: $step"
  start=$(date +%s)
  case "$step" in
    lint) make -s lint ;;
    unit) pytest -q -p no:cacheprovider tests/unit ;;
    # The roles' preflights on this machine (connection local, check mode): bad input is named, no container.
    preflight) pytest -q -p no:cacheprovider tests/preflight ;;
    sanity) scripts/sanity.sh ;;
    build) scripts/build-smoke.sh ;;
    molecule:*) molecule test -s "${step#molecule:}" ;;
    # The README's first command, as a newcomer runs it; then remove its container.
    demo) make -s demo && make -s demo-destroy ;;
    *) echo "unknown step $step"; false ;;
  esac
  rc=$?
  if [ $rc -eq 0 ]; then verdict=PASSED; else verdict=FAILED; fi
  printf '%-28s %-6s %4ss\n' "$step" "$verdict" "$(($(date +%s) - start))" >> "$results/report"
}

run_lane() { local step; for step in "$@"; do run_step "$step"; done; }

if (($#)); then
  run_lane "$@"
else
  # The second lane: the four-host stack and two single-host scenarios, so the lanes take about as long.
  second=(molecule:stack molecule:redis molecule:deploy)
  scenarios=$(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done | grep -vxE 'demo|stack|redis|deploy')
  other=(lint unit preflight sanity build $(printf 'molecule:%s ' $scenarios) demo)
  # The second lane's output goes to a file, shown whole when it ends, so the two lanes do not interleave.
  run_lane "${second[@]}" > "$results/stack.log" 2>&1 &
  stack_lane=$!
  run_lane "${other[@]}"
  wait "$stack_lane"
  cat "$results/stack.log"
fi

# Without -f: never remove a container that still uses the volume.
podman volume rm vpsstack-swaptest >/dev/null 2>&1 || true
passed=$(grep -c ' PASSED ' "$results/report")
failed=$(grep -c ' FAILED ' "$results/report")
echo
echo "::: step summary"
sed 's/^/  /' "$results/report"
echo "  total $(($(date +%s) - t0)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
