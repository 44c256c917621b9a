"""The audit's pure parts (plugins/module_utils/vpsstack_audit.py): thresholds, the programs the plan implies, the
Redis wire protocol, a section that cannot be read becoming a FAIL line, not a crash; its two entry points."""
from __future__ import annotations

import importlib.util
import fnmatch
import io
import os
import time

import pytest
from role_files import fake_versions, load_worker_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPEC = importlib.util.spec_from_file_location(
    "vpsstack_audit", os.path.join(REPO, "plugins", "module_utils", "vpsstack_audit.py"))
audit = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(audit)


@pytest.fixture(autouse=True)
def fresh_lines():
    audit.LINES.clear()
    yield


@pytest.mark.parametrize("value, expected", [(0, "OK"), (79, "OK"), (80, "WARN"), (94, "WARN"), (95, "FAIL")])
def test_level_thresholds_are_inclusive(value, expected):
    assert audit.level(value, 80, 95) == expected


def test_planned_programs_follow_the_template_rules():
    spec = {
        "groups": [{"name": "default", "queues": ["celery"]},
                   {"name": "io", "pool": "gevent"},
                   {"name": "scaled", "autoscale": [4, 1]},
                   {"name": "unlimited"}],
        "planned": [{"name": "default", "concurrency": 2, "max_memory_per_child_kib": 121856},
                    {"name": "io", "concurrency": 56, "max_memory_per_child_kib": 4096},
                    {"name": "scaled", "concurrency": 4, "max_memory_per_child_kib": 1024},
                    {"name": "unlimited", "concurrency": 1, "max_memory_per_child_kib": 0}],
        "beat": True,
    }
    assert audit.planned_programs(spec) == [
        {"name": "celery-default", "pool": "prefork", "concurrency": 2, "max_memory_per_child_kib": 121856},
        # gevent: no per-child limit on the command line; autoscale: no --concurrency; 0: no limit rendered.
        {"name": "celery-io", "pool": "gevent", "concurrency": 56, "max_memory_per_child_kib": None},
        {"name": "celery-scaled", "pool": "prefork", "concurrency": None, "max_memory_per_child_kib": 1024},
        {"name": "celery-unlimited", "pool": "prefork", "concurrency": 1, "max_memory_per_child_kib": None},
        {"name": "celery-beat"},
    ]


def resp(raw):
    client = audit.Redis.__new__(audit.Redis)
    client.file = io.BytesIO(raw)
    return client._read()


@pytest.mark.parametrize("raw, value", [
    (b"+OK\r\n", "OK"),
    (b":42\r\n", 42),
    (b"$5\r\nhello\r\n", "hello"),
    (b"$-1\r\n", None),
    (b"*2\r\n$9\r\nmaxmemory\r\n$8\r\n75602329\r\n", ["maxmemory", "75602329"]),
    (b"*0\r\n", []),
])
def test_resp_replies(raw, value):
    assert resp(raw) == value


def test_resp_error_raises():
    with pytest.raises(RuntimeError, match="NOAUTH"):
        resp(b"-NOAUTH Authentication required.\r\n")


def test_an_unreadable_section_is_a_fail_line():
    def broken(_spec):
        raise FileNotFoundError(2, "No such file or directory", "supervisorctl")
    audit.guarded("workers", broken, {})
    assert audit.LINES == [["FAIL", "workers", "could not be read: FileNotFoundError: [Errno 2] No such file or "
                                               "directory: 'supervisorctl'"]]


def test_program_drift_names_what_differs(monkeypatch):
    monkeypatch.setattr(audit, "argv", lambda _pid: ["/opt/celery/venv/bin/celery", "-A", "app", "worker",
                                                     "--pool", "prefork", "--concurrency", "4",
                                                     "--max-memory-per-child", "121856"])
    monkeypatch.setattr(audit, "children", lambda _pid: [])
    audit.audit_program_drift({"name": "celery-default", "pool": "prefork", "concurrency": 2,
                               "max_memory_per_child_kib": 121856}, 1)
    status, check, detail = audit.LINES[0]
    assert (status, check) == ("FAIL", "celery-default settings")
    assert "concurrency" in detail and "pool" not in detail


def test_worker_log_scan_counts_lost_children_and_names_poison_tasks():
    log = [
        "[2026-11-30 10:00:00,000: ERROR/MainProcess] Task handler raised error: WorkerLostError('Worker exited "
        "prematurely: signal 9 (SIGKILL) Job: 3.')",
        "[2026-11-30 10:00:01,000: WARNING/MainProcess] Task app.tasks.crunch[1f2e] lost its worker child "
        "(1 of worker_poison_max_lost=3): requeued",
        "[2026-11-30 10:00:09,000: ERROR/MainProcess] Poison task app.tasks.crunch[1f2e]: its worker child was lost "
        "3 times (worker_poison_max_lost=3): not requeued again, acknowledged and marked failed (WorkerLostError)",
        "[2026-11-30 10:00:10,000: INFO/MainProcess] Task app.tasks.add[77aa] succeeded in 0.01s: 3",
    ]
    assert audit.scan_worker_log(log) == (2, ["app.tasks.crunch"], [])
    assert audit.scan_worker_log(["plain line"]) == (0, [], [])


def test_the_poison_pattern_matches_what_the_guard_logs():
    with open(os.path.join(REPO, "roles", "worker", "files", "vpsstack_poison_guard.py"), encoding="utf-8") as fh:
        guard = fh.read()
    assert '"Poison task %s[%s]: ' in guard  # the format the audit's POISON_LINE reads
    assert audit.POISON_LINE.search("Poison task %s[%s]: " % ("proj.tasks.x", "id")).group(1) == "proj.tasks.x"


def skip_line(monkeypatch, caplog, patch, installed):
    """The line a runtime patch of the worker role logs when it finds other versions than it was tested with."""
    module = load_worker_file(patch)
    fake_versions(monkeypatch, installed)
    caplog.clear()
    if patch == "vpsstack_timer_compaction":
        module.install(app=None)  # skipped before the app is touched
    else:
        module.install()
    [record] = caplog.records
    return record.getMessage()


def test_worker_log_scan_names_the_patches_that_skipped_themselves(monkeypatch, caplog):
    # What the patches really log, as it lands in a program's log: bare (Python's last-resort handler, before
    # Celery configures logging), twice for a program started twice.
    poll = skip_line(monkeypatch, caplog, "vpsstack_consumer_poll", {"kombu": "5.8.0", "redis": "8.1.0"})
    timer = skip_line(monkeypatch, caplog, "vpsstack_timer_compaction", {"kombu": "5.8.0"})
    log = [poll, timer, "[2026-12-01 10:00:00,000: INFO/MainProcess] Connected to redis://10.0.0.5:6379/0", poll]

    _lost, _poison, skipped = audit.scan_worker_log(log)

    assert skipped == ["vpsstack_consumer_poll (kombu 5.8.0)", "vpsstack_timer_compaction (kombu 5.8.0)",
                       "vpsstack_consumer_poll (kombu 5.8.0)"]


def test_skipped_patches_are_one_warn_line(monkeypatch, tmp_path):
    log = tmp_path / "celery-default.log"
    log.write_text("vpsstack_consumer_poll patch skipped: found redis 7.4.0; tested with kombu 5.7.0, redis 8.1.0\n"
                   "[2026-12-01 10:00:00,000: INFO/MainProcess] celery@worker1 ready.\n"
                   "vpsstack_consumer_poll patch skipped: found redis 7.4.0; tested with kombu 5.7.0, redis 8.1.0\n")
    (tmp_path / "celery-beat.log").write_text("[2026-12-01 10:00:00,000: INFO/MainProcess] beat: Starting...\n")
    audit.audit_log_errors({"log_dir": str(tmp_path)})
    assert ["WARN", "runtime patches skipped", "vpsstack_consumer_poll (redis 7.4.0)"] in audit.LINES

    audit.LINES.clear()
    log.write_text("[2026-12-01 10:00:00,000: INFO/MainProcess] celery@worker1 ready.\n")
    audit.audit_log_errors({"log_dir": str(tmp_path)})
    assert ["OK", "runtime patches skipped", "none"] in audit.LINES


class PrefixedBroker(audit.Redis):
    """A broker whose kombu keys all start with a project's global_keyprefix (what the workers write)."""

    KEYS = {"app1:celery": ("list", 7), "app1:celeryev.dead": ("list", 1), "celery": ("list", 0)}

    passwords = []

    def __init__(self, _port, password):  # no socket
        self.asked = []
        self.passwords.append(password)

    def call(self, *args):
        self.asked.append(args)
        command = args[0]
        if command == "INFO":
            return "used_memory:1000\r\nmaxmemory:100000\r\nrdb_last_bgsave_status:ok\r\n"
        if command == "CONFIG":
            return [args[2], ""]
        if command == "LLEN":
            return self.KEYS.get(args[1], ("list", 0))[1]
        if command == "ZRANGE":
            return [] if args[1] != "app1:unacked_index" else ["tag", str(time.time() - 60)]
        if command == "SCAN":
            pattern = args[3].replace("\\", "")
            return ["0", [k for k in self.KEYS if fnmatch.fnmatchcase(k, pattern)]]
        if command == "TYPE":
            return self.KEYS[args[1]][0]
        if command == "MEMORY":
            return 100
        return "OK"


def test_a_project_global_keyprefix_is_read_before_every_kombu_key(monkeypatch):
    monkeypatch.setattr(audit, "Redis", PrefixedBroker)
    spec = {"port": 6379, "expect": {}, "drift_status": {}, "memory_warn_pct": 80, "memory_fail_pct": 95,
            "queues": ["celery"], "queue_warn_length": 5, "queue_fail_length": 100, "visibility_timeout": 3600,
            "unacked_warn_pct": 50, "orphan_warn_keys": 10, "orphan_fail_pct": 50, "keyprefix": "app1:"}
    audit.audit_redis(spec, "pw")
    lines = {check: (status, detail) for status, check, detail in audit.LINES}
    assert lines["queue celery"] == ("WARN", "7 waiting")
    assert lines["oldest unacked"][1].startswith("60 s old")
    assert lines["orphan event lists"][0] == "WARN" and lines["orphan event lists"][1].startswith("1 keys")
    assert audit.glob_escape("a*b[c]?") == "a\\*b\\[c\\]\\?"


REDIS_SPEC = {"port": 6379, "expect": {}, "drift_status": {}, "memory_warn_pct": 80, "memory_fail_pct": 95,
              "queues": ["celery"], "queue_warn_length": 5, "queue_fail_length": 100, "visibility_timeout": 3600,
              "unacked_warn_pct": 50, "orphan_warn_keys": 10, "orphan_fail_pct": 50, "keyprefix": "app1:"}


def test_run_starts_afresh_and_hands_the_password_to_redis(monkeypatch):
    monkeypatch.setattr(audit, "Redis", PrefixedBroker)
    monkeypatch.setattr(audit, "audit_host", lambda spec: audit.report("OK", "host", "fine"))
    monkeypatch.setattr(audit, "beat_running", lambda: [42])
    PrefixedBroker.passwords.clear()
    audit.report("FAIL", "left over from an earlier run", "")
    result = audit.run({"redis": REDIS_SPEC}, "secret pw")
    assert PrefixedBroker.passwords == ["secret pw"]
    checks = [check for _status, check, _detail in result["lines"]]
    assert "left over from an earlier run" not in checks and "queue celery" in checks and checks[-1] == "host"
    assert result["beat_pids"] == [42]


def test_the_script_reads_the_password_from_stdin_not_argv(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(audit, "run", lambda spec, password: seen.update(spec=spec, password=password) or {"lines": []})
    monkeypatch.delenv("REDISCLI_AUTH", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    monkeypatch.setattr("sys.argv", ["vpsstack_audit.py", "eyJ3b3JrZXIiOiBudWxsfQ=="])  # {"worker": null}
    audit.main()
    assert seen == {"spec": {"worker": None}, "password": "from stdin"}
    assert capsys.readouterr().out.strip() == '{"lines": []}'
