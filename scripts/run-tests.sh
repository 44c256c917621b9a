#!/usr/bin/env bash
# Everything CI runs, each step timed; ends with a table of the steps and a pytest-style summary line.
# Usage: scripts/run-tests.sh [STEP...]
#   steps: lint unit preflight sanity build molecule:<scenario> demo (default: all)
# With no arguments the cheap static checks run first (a lint failure must not cost the molecule run), then two
# lanes take the other steps from one queue, longest first by the times recorded in tests/step-times.txt: the
# lane that ends a step takes the next, so the lanes end close together whatever the times were.
# Named steps run one after another.
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
setup_s=$(($(date +%s) - t0))

# A run killed inside the privileged scenario leaves its swap file active in the host kernel: turn it off.
awk 'NR > 1 && $1 ~ /vpsstack-swaptest/ {print $1}' /proc/swaps | xargs -r -n1 swapoff 2>/dev/null || true

results=$(mktemp -d)
# The host's CPU counters over the steps (/proc/stat: user nice system idle iowait irq softirq steal), to tell a
# run that waits from one that saturates the cores: the summary prints how busy they were.
cpu_start=$(head -n1 /proc/stat)
# The package caches of this run (molecule/shared/create.yml points the containers at them).
# shellcheck source=scripts/test-caches.sh
source scripts/test-caches.sh
start_test_caches
trap 'stop_test_caches; rm -rf "$results"' EXIT

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
    # The README's first command, as a newcomer runs it; then remove its container. A demo left by a run that
    # was cut off goes first: molecule would skip creating hosts its state file says exist.
    demo) make -s demo-destroy >/dev/null 2>&1; make -s demo && make -s demo-destroy ;;
    *) echo "unknown step $step"; false ;;
  esac
  rc=$?
  if [ $rc -eq 0 ]; then verdict=PASSED; else verdict=FAILED; fi
  printf '%-28s %-6s %4ss\n' "$step" "$verdict" "$(($(date +%s) - start))" >> "$results/report"
  return $rc
}

run_lane() { local step; for step in "$@"; do run_step "$step"; done; }

# lane_worker N: takes steps from the shared queue until it is empty; the lane's output goes to its own log,
# printed whole when the lane ends, so the two lanes do not interleave.
lane_worker() {
  local step
  while :; do
    step=$(flock "$results/queue" sh -c 'head -n1 "$1" && sed -i 1d "$1"' _ "$results/queue")
    [ -n "$step" ] || break
    run_step "$step"
  done > "$results/lane$1.log" 2>&1
}

if (($#)); then
  run_lane "$@"
else
  static=(lint unit)
  # demo is its own step (the README's command), not a molecule test.
  scenarios=$(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done | grep -vx demo)
  rest=(preflight sanity build $(printf 'molecule:%s ' $scenarios) demo)
  if run_lane "${static[@]}"; then
    # Longest first by the recorded times; a step with no record goes first (it may be long).
    for step in "${rest[@]}"; do
      printf '%s %s\n' "$(awk -v s="$step" 'BEGIN {t = 99999} $1 == s {t = $2} END {print t}' tests/step-times.txt)" "$step"
    done | sort -k1,1nr | awk '{print $NF}' > "$results/queue"
    lane_worker 1 & lane1=$!
    lane_worker 2 & lane2=$!
    wait "$lane1" "$lane2"
    cat "$results/lane1.log" "$results/lane2.log"
  else
    echo "run-tests: a static check failed; the molecule scenarios did not run"
  fi
fi

# Without -f: never remove a container that still uses the volume.
podman volume rm vpsstack-swaptest >/dev/null 2>&1 || true
passed=$(grep -c ' PASSED ' "$results/report")
failed=$(grep -c ' FAILED ' "$results/report")
echo
echo "::: step summary"
printf '  %-28s %-6s %4ss\n' "setup (venv, host, image)" done "$setup_s"
sed 's/^/  /' "$results/report"
echo "  total $(($(date +%s) - t0)) s"
printf '%s\n%s\n' "$cpu_start" "$(head -n1 /proc/stat)" | awk -v cpus="$(nproc)" '
  {idle[NR] = $5 + $6; steal[NR] = $9; total[NR] = 0; for (i = 2; i <= 9; i++) total[NR] += $i}
  END {t = total[2] - total[1]; if (t > 0) printf "  host CPU over the steps: %d %% busy of %d cores, %d %% stolen\n",
       100 * (t - (idle[2] - idle[1])) / t, cpus, 100 * (steal[2] - steal[1]) / t}'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
