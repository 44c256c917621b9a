"""The liveness watchdog (vpsstack-watchdog.timer, roles/worker/tasks/watchdog.yml) on the reliability host.

A worker parent frozen with SIGSTOP answers no ping: the watchdog restarts its program (TERM stays pending in a
stopped process, so supervisor SIGKILLs the group after stopwaitsecs), and the tasks it held come back after the
visibility timeout: none lost. A program an operator stopped stays stopped meanwhile. Timings are bounded, not
asserted; the CPU time of a run is measured and printed."""
import importlib.util
import json
import os
import re
import time

PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
SPEC = importlib.util.spec_from_file_location("reliability", os.path.join(PROJECT, "scripts", "reliability.py"))
harness = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(harness)

HOST = harness.Host("vpsstack-reliability")


def deployed():
    """The watchdog's settings as installed (unit files) and the program's stop wait (supervisor)."""
    service = HOST.sh("cat /etc/systemd/system/vpsstack-watchdog.service")
    timer = HOST.sh("cat /etc/systemd/system/vpsstack-watchdog.timer")
    program = HOST.sh("cat /etc/supervisor/conf.d/celery-default.conf")
    return {
        "interval": int(re.search(r"^OnUnitInactiveSec=(\d+)$", timer, re.M).group(1)),
        "failures": int(re.search(r"--failures (\d+)", service).group(1)),
        "timeout": int(re.search(r"--timeout (\d+)", service).group(1)),
        "stopwaitsecs": int(re.search(r"^stopwaitsecs=(\d+)$", program, re.M).group(1)),
    }


def journal(since):
    return HOST.sh(f"journalctl --no-pager -o cat -t vpsstack-watchdog --since @{since}", check=False)


def watchdog_runs():
    """Start time of the watchdog service's last run (monotonic, µs): changes once per run."""
    return HOST.sh("systemctl show -p ExecMainStartTimestampMonotonic --value vpsstack-watchdog.service")


def cpu_seconds(command, runs):
    """Median user+sys CPU seconds of a command on the host (bash's time; no cgroup CPU accounting here)."""
    times = sorted(sum(map(float, HOST.sh(f"TIMEFORMAT='%U %S'; {{ time {command} >/dev/null 2>&1; }} 2>&1").split()))
                   for _run in range(runs))
    return times[len(times) // 2]


def test_the_timer_runs_the_watchdog_and_a_run_is_cheap():
    assert HOST.sh("systemctl is-enabled vpsstack-watchdog.timer") == "enabled"
    assert HOST.sh("systemctl is-active vpsstack-watchdog.timer") == "active"
    # The converge and the harness before this test took minutes: the timer has fired many times by now.
    assert HOST.sh("systemctl show -p LastTriggerUSec --value vpsstack-watchdog.timer") not in ("", "n/a", "0")
    assert HOST.sh("systemctl show -p Result --value vpsstack-watchdog.service") == "success"
    # The unit's own command, with a scratch state file; then what the audit and health checks run.
    command = re.search(r"argv\[\]=([^;]*) ;", HOST.sh("systemctl show -p ExecStart --value vpsstack-watchdog.service"))
    watchdog = re.sub(r"--state \S+", "--state /tmp/watchdog-measure.json", command.group(1).strip())
    inspect = ("/usr/local/bin/vpsstack-celery inspect ping --timeout 5 "
               "--destination default@vpsstack-reliability,io@vpsstack-reliability")
    print(f"watchdog: one run {cpu_seconds(watchdog, 3):.2f} s CPU (user+sys, median of 3); "
          f"vpsstack-celery inspect ping {cpu_seconds(inspect, 1):.2f} s")


def test_a_frozen_worker_is_restarted_a_stopped_one_is_not_and_no_task_is_lost():
    """celery-default frozen (SIGSTOP) while an operator keeps celery-io stopped: the watchdog's runs over that time
    restart the first and leave the second alone."""
    settings = deployed()
    since = HOST.sh("date +%s")
    key = f"watchdog-{since}"
    ids = HOST.client("send-record", key, 6, 2)
    assert harness.wait_until(lambda: HOST.client("started-record", key) >= 1, 60, step=0.3)
    HOST.sh("supervisorctl stop celery-io")
    runs = {watchdog_runs()}
    frozen = HOST.pid("celery-default")
    HOST.sh(f"kill -STOP {frozen}")
    t0 = time.monotonic()
    # Silent runs, each up to the ping timeout apart by the interval, then the stop wait and supervisor's startsecs.
    deadline = (settings["failures"] + 1) * (settings["interval"] + settings["timeout"]) + settings["stopwaitsecs"] + 60

    def restarted():
        runs.add(watchdog_runs())
        return (HOST.sh("supervisorctl status celery-default", check=False).split()[1:2] == ["RUNNING"]
                and HOST.pid("celery-default") != frozen)

    try:
        assert harness.wait_until(restarted, deadline, step=2), f"celery-default not restarted in {deadline} s"
        print(f"watchdog: celery-default frozen, running again as pid {HOST.pid('celery-default')} after "
              f"{time.monotonic() - t0:.0f} s (deadline {deadline} s)")
        lines = journal(since)
        print(lines)
        assert (f"celery-default: node default@vpsstack-reliability did not answer {settings['failures']} pings in a "
                f"row: restarting it (supervisorctl restart, pid {frozen})") in lines
        assert "celery-default: restarted by the watchdog, now RUNNING" in lines
        # The operator's stop outlasted the watchdog's runs (those that began after it) untouched.
        assert len(runs) - 1 >= 2, "the watchdog did not run twice while celery-io was stopped"
        assert " STOPPED " in HOST.sh("supervisorctl status celery-io", check=False)
        assert not re.search(r"celery-io: .*(restarting it|restarted by the watchdog)", lines)
    finally:
        HOST.sh(f"kill -CONT {frozen} 2>/dev/null", check=False)
        HOST.sh("supervisorctl start celery-io", check=False)
    # What the frozen worker held comes back once older than the visibility timeout (70 s here): none lost.
    counts = HOST.client("count-record", key, json.dumps(ids), 240)
    print(f"watchdog: {json.dumps(counts)}")
    assert counts["lost"] == [], counts
    assert harness.wait_until(HOST.programs_running, 60)
