"""Live behaviour of the redis role in a 1 GB / 1 vCPU container."""
import json
import os
import shlex
import sys
import time

import pytest
import testinfra.utils.ansible_runner

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import nofile_of  # noqa: E402

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["podman://" + h for h in RUNNER.get_hosts("all")]

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def hv(host):
    hostvars = {"redis_port": 6379, "redis_celery_user": "celery"}  # role defaults the scenario does not set
    hostvars.update(RUNNER.get_variables(host.backend.get_hostname()))
    return hostvars


def cli(host, hv, *args, user=None, password="admin", stdin=None, db=0, source=None):
    """redis-cli as admin (default), as the Celery user, or without a password; returns the Result."""
    env = ""
    if password == "admin":
        env = "REDISCLI_AUTH=" + shlex.quote(hv["redis_password"])
    elif password:
        env = "REDISCLI_AUTH=" + shlex.quote(password)
    cmd = f"{env} redis-cli -p {hv['redis_port']} -n {db}"
    if user:
        cmd += " --user " + shlex.quote(user)
    cmd += " " + " ".join(shlex.quote(str(a)) for a in args)
    if stdin is not None:
        cmd = f"printf %s {shlex.quote(stdin)} | {cmd}"
    if source is not None:  # a shell pipeline generating commands on the host (argv is too small for MBs)
        cmd = f"{source} | {cmd}"
    return host.run(cmd)


def out(host, hv, *args, **kw):
    res = cli(host, hv, *args, **kw)
    assert res.rc == 0, res.stderr
    return res.stdout.strip()


def config_get(host, hv, name):
    return out(host, hv, "CONFIG", "GET", name).splitlines()[1]


def main_pid(host):
    return int(host.check_output("systemctl show -p MainPID --value redis-server"))


def wait_ping(host, hv, old_pid=None, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = main_pid(host)
        if pid and pid != old_pid and cli(host, hv, "PING").stdout.strip() == "PONG":
            return pid
        time.sleep(0.5)
    raise AssertionError("redis-server did not come back")


@pytest.fixture(scope="module")
def plan(host):
    return json.loads(host.file("/root/vpsstack-plan.json").content_string)


def test_config_matches_plan(host, hv, plan):
    maxmemory = int(config_get(host, hv, "maxmemory"))
    print(f"maxmemory={maxmemory} ({maxmemory / MIB:.1f} MiB), plan ram_mb={plan['ram_mb']}")
    assert maxmemory == plan["redis"]["maxmemory_bytes"]
    # Sized from the 1 GB cgroup limit, not the host's 24 GiB.
    assert plan["ram_mb"] <= 1024
    assert 64 * MIB <= maxmemory < 1024 * MIB
    assert config_get(host, hv, "maxmemory-policy") == "volatile-lru"
    assert config_get(host, hv, "appendonly") == "yes"
    assert config_get(host, hv, "appendfsync") == "everysec"
    assert config_get(host, hv, "aof-use-rdb-preamble") == "yes"
    assert config_get(host, hv, "protected-mode") == "yes"
    assert "aof_enabled:1" in out(host, hv, "INFO", "persistence")


def record(host, name):
    return json.loads(host.file(f"/root/vpsstack-{name}.json").content_string)


def test_check_mode_left_stock_redis_alone(host):
    """prepare.yml left stock Redis (AOF off) with queued tasks; the --check run must not have touched it."""
    stock, seen = record(host, "prepare"), record(host, "after-check")
    print(f"check run: queue {stock['llen']} -> {seen['llen']}, keys {stock['dbsize']} -> {seen['dbsize']}, "
          f"appendonly {seen['appendonly']}, same process {stock['run_id'] == seen['run_id']}")
    assert stock["llen"] == 500
    assert (seen["llen"], seen["dbsize"], seen["run_id"]) == (stock["llen"], stock["dbsize"], stock["run_id"])
    assert seen["appendonly"] == "no"
    assert not seen["restart_conf_exists"]


def test_adoption_kept_every_queued_task(host, hv):
    """Converge switched AOF on at runtime before restarting: the tasks are there, and in the AOF."""
    stock = record(host, "prepare")
    assert record(host, "after-converge")["llen"] == stock["llen"]
    assert int(out(host, hv, "LLEN", "celery")) == stock["llen"]
    old = main_pid(host)
    started = time.time()
    host.check_output("systemctl restart redis-server")
    wait_ping(host, hv, old)
    elapsed = time.time() - started
    # With appendonly yes Redis loads only the AOF: what is here now came from it, not from dump.rdb.
    llen = int(out(host, hv, "LLEN", "celery"))
    print(f"adoption: {stock['llen']} queued before, {llen} after converge + restart ({elapsed:.1f} s)")
    assert llen == stock["llen"]
    assert out(host, hv, "LINDEX", "celery", 0) == "task-1"
    assert out(host, hv, "LINDEX", "celery", -1) == f"task-{stock['llen']}"
    assert out(host, hv, "GET", "plain-key") == "v1"
    assert out(host, hv, "HGET", "unacked", "tag-1") == "message-1"
    assert out(host, hv, "ZSCORE", "unacked_index", "tag-1") == "1"
    assert out(host, hv, "GET", "other-db-key", db=1) == "v2"
    assert host.file("/var/lib/redis/appendonlydir/appendonly.aof.manifest").exists


def test_bad_config_never_replaces_a_good_one(host, hv):
    rec = record(host, "bad-config")
    print(f"bad directive: {rec['outcome']!r}; {rec['stderr'].strip().splitlines()[-2:]}")
    assert "Write the restart-only and runtime settings" in rec["outcome"]
    assert "Bad directive" in rec["stderr"]
    assert rec["checksum_before"] == rec["checksum_after"]
    assert rec["run_id_before"] == rec["run_id_after"]
    assert "no-such-directive" not in host.file("/etc/redis/redis.d/restart.conf").content_string
    assert out(host, hv, "PING") == "PONG"
    # The throw-away server is gone and left nothing behind.
    assert host.run("pgrep -f vpsstack-redis-chec[k]").rc == 1
    assert host.run("ls -d /tmp/vpsstack-redis-check.*").rc != 0


def test_aof_is_never_switched_on_in_a_dir_redis_does_not_run_from(host, hv):
    """side_effect.yml: AOF off at runtime, then the role with redis_dir elsewhere: refused before any change."""
    rec = record(host, "aof-dir")
    assert rec["outcome"].startswith("Refuse to switch AOF on in another dir than the one Redis restarts with"), rec
    assert "keeps its data in /var/lib/redis, but redis_dir is /var/lib/redis-elsewhere" in rec["outcome"], rec
    assert rec["appendonly_after_refusal"] == "no", rec
    assert rec["checksum_before"] == rec["checksum_after"]
    assert config_get(host, hv, "appendonly") == "yes"


def test_a_restart_an_interrupted_run_never_made_happens_on_the_next_run(host):
    """side_effect.yml: restart.conf newer than the server (a run stopped before its restart), then the role."""
    rec = record(host, "stale")
    assert rec["stale_files"] == ["/etc/redis/redis.d/restart.conf"], rec
    assert rec["run_id_before"] != rec["run_id_after"], rec


def test_config_files_are_private(host):
    for path in ("/etc/redis/redis.conf", "/etc/redis/redis.d/restart.conf",
                 "/etc/redis/redis.d/runtime.conf", "/etc/redis/redis.d/users.conf"):
        f = host.file(path)
        assert (f.user, f.group, f.mode) == ("redis", "redis", 0o640), path
    assert "molecule" not in host.file("/etc/redis/redis.d/users.conf").content_string


def test_listens_on_loopback_only(host, hv):
    listening = host.check_output("ss -Hltn 'sport = :%s'" % hv["redis_port"])
    addrs = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert addrs and addrs <= {"127.0.0.1", "[::1]"}


def test_no_password_is_refused(host, hv):
    assert "NOAUTH" in cli(host, hv, "GET", "x", password=None).stdout


def test_celery_user_cannot_flush_or_configure(host, hv):
    celery = dict(user=hv["redis_celery_user"], password=hv["redis_celery_password"])
    for cmd in (["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "GET", "maxmemory"], ["CONFIG", "SET", "maxmemory", "0"],
                ["KEYS", "*"], ["SHUTDOWN"]):
        assert "NOPERM" in cli(host, hv, *cmd, **celery).stdout, cmd
    # DEBUG is refused before the ACL check (enable-debug-command no): ask the ACL itself.
    for cmd in (["DEBUG", "SLEEP", "0"], ["FLUSHALL"], ["CONFIG", "SET", "appendonly", "no"]):
        assert "no permissions" in out(host, hv, "ACL", "DRYRUN", hv["redis_celery_user"], *cmd), cmd


def test_celery_user_can_do_what_kombu_does(host, hv):
    celery = dict(user=hv["redis_celery_user"], password=hv["redis_celery_password"], db=1)
    script = "\n".join([
        "LPUSH celery q1", "RPUSH celery q2", "LLEN celery", "BRPOP celery 1", "RPOP celery",
        "HSET unacked tag msg", "HGET unacked tag", "HDEL unacked tag",
        "ZADD unacked_index 1 tag", "ZRANGE unacked_index 0 -1", "ZREM unacked_index tag",
        "SADD _kombu.binding.celery x", "SMEMBERS _kombu.binding.celery", "SREM _kombu.binding.celery x",
        "SETEX celery-task-meta-1 60 r", "GET celery-task-meta-1", "PUBLISH celery-task-meta-1 r",
        "MULTI", "INCR chord", "EXPIRE chord 60", "EXEC", "EVAL \"return 1\" 0", "PING", "DEL chord",
        "CLIENT SETNAME worker", "",
    ])
    res = cli(host, hv, stdin=script, **celery)
    assert res.rc == 0
    assert "ERR" not in res.stdout and "NOPERM" not in res.stdout, res.stdout


def test_open_file_limit(host, hv):
    assert nofile_of(host, main_pid(host)) == (hv["redis_maxclients"] + 32,) * 2
    assert config_get(host, hv, "maxclients") == str(hv["redis_maxclients"])


def test_runtime_change_without_restart(host, hv, plan):
    rec = json.loads(host.file("/root/vpsstack-side-effect.json").content_string)
    assert rec["maxmemory_during"] == 100 * MIB
    assert rec["run_id_before"] == rec["run_id_after"]
    # And back to the plan's value.
    assert int(config_get(host, hv, "maxmemory")) == plan["redis"]["maxmemory_bytes"]


def test_key_survives_restart(host, hv):
    out(host, hv, "SET", "persist-restart", "v1", db=2)
    old = main_pid(host)
    host.check_output("systemctl restart redis-server")
    wait_ping(host, hv, old)
    assert out(host, hv, "GET", "persist-restart", db=2) == "v1"


def test_key_survives_kill_9(host, hv):
    out(host, hv, "SET", "persist-kill", "v2", db=2)
    time.sleep(2)  # appendfsync everysec: more than 1 s old is on disk
    old = main_pid(host)
    host.check_output(f"kill -9 {old}")
    new = wait_ping(host, hv, old)
    print(f"kill -9 {old}: systemd restarted redis-server as {new}")
    assert out(host, hv, "GET", "persist-kill", db=2) == "v2"


def test_queue_is_never_evicted(host, hv):
    """Fill a small maxmemory with results (TTL) and queue items: results go, queue items stay, then OOM."""
    celery = dict(user=hv["redis_celery_user"], password=hv["redis_celery_password"], db=3)
    original = config_get(host, hv, "maxmemory")
    batch_size = 250
    pushed = results = oom = 0
    try:
        out(host, hv, "CONFIG", "SET", "maxmemory", 8 * MIB)
        for batch in range(40):  # bounded: 40 x 500 x 1 KB is far above 8 MB
            # Alternating SETEX (a result, 1 KB, TTL 1 h) and RPUSH (a queued task, 1 KB).
            source = ("P=$(head -c 1000 /dev/zero | tr '\\0' x); "
                      f"for i in $(seq 1 {batch_size}); do echo \"SETEX celery-task-meta-{batch}-$i 3600 $P\"; "
                      "echo \"RPUSH celery $P\"; done")
            # redis-cli prints a blank line after each error reply.
            replies = [ln for ln in cli(host, hv, source=source, **celery).stdout.splitlines() if ln.strip()]
            assert len(replies) == 2 * batch_size
            for n, reply in enumerate(replies):
                if reply.startswith("OOM"):
                    oom += 1
                elif n % 2:
                    pushed += 1
                else:
                    results += 1
            llen = int(out(host, hv, "LLEN", "celery", **celery))
            assert llen == pushed, f"queue lost {pushed - llen} items"
            if oom and all(r.startswith("OOM") for r in replies[-20:]):
                break
        info = out(host, hv, "INFO", "keyspace")
        dbsize = out(host, hv, "DBSIZE", db=3)
        print(f"fill: {results} results and {pushed} queue items written, queue kept {pushed}, "
              f"{oom} writes refused with OOM, evicted_keys="
              + out(host, hv, "INFO", "stats").split("evicted_keys:")[1].split()[0] + f", dbsize={dbsize}")
        assert oom > 0, "never reached OOM"
        # Only the TTL keys could go: nothing volatile is left in db 3 when writes are refused.
        assert "db3:" not in info or "expires=0" in info.split("db3:")[1].splitlines()[0]
    finally:
        out(host, hv, "CONFIG", "SET", "maxmemory", original)
        out(host, hv, "FLUSHDB", db=3)
