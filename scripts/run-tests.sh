#!/usr/bin/env bash
# Everything CI runs, in order, each step timed; ends with a pytest-style summary line.
# Usage: scripts/run-tests.sh [STEP...]
#   steps: lint unit preflight sanity build molecule:<scenario> demo (default: all)
set -uo pipefail
t0=$(date +%s)
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH ANSIBLE_COLLECTIONS_PATH=$PWD/.build/collections

# Runs on one host share container names, a podman volume and the kernel's vm.* settings and swap (the privileged
# scenario changes them): a second run waits for the first instead of destroying its containers.
exec 9>"${TMPDIR:-/tmp}/vpsstack-celery-tests.lock"
if ! flock -n 9; then
  echo "run-tests: another test run holds ${TMPDIR:-/tmp}/vpsstack-celery-tests.lock; waiting for it"
  flock -w 3600 9 || { echo "run-tests: gave up waiting"; echo "0 passed, 1 failed"; exit 1; }
fi

make -s venv collection >/dev/null || { echo "run-tests: venv setup failed"; echo "0 passed, 1 failed"; exit 1; }
scripts/prepare-test-host.sh || { echo "run-tests: test host setup failed"; echo "0 passed, 1 failed"; exit 1; }

scenarios=$(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done | grep -vx demo)
steps=("$@")
((${#steps[@]})) || steps=(lint unit preflight sanity build $(printf 'molecule:%s ' $scenarios) demo)

# A run killed inside the privileged scenario leaves its swap file active in the host kernel: turn it off.
awk 'NR > 1 && $1 ~ /vpsstack-swaptest/ {print $1}' /proc/swaps | xargs -r -n1 swapoff 2>/dev/null || true

passed=0 failed=0 report=()
for step in "${steps[@]}"; do
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
  secs=$(($(date +%s) - start))
  if [ $rc -eq 0 ]; then passed=$((passed + 1)); verdict=PASSED; else failed=$((failed + 1)); verdict=FAILED; fi
  report+=("$(printf '%-28s %-6s %4ss' "$step" "$verdict" "$secs")")
done

# Without -f: never remove a container that still uses the volume.
podman volume rm vpsstack-swaptest >/dev/null 2>&1 || true
echo
echo "::: step summary"
printf '  %s\n' "${report[@]}"
echo "  total $(($(date +%s) - t0)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
