"""Each role's preflight stops a bad input before any change, with a message that names the variable.

The preflight task files run on the controller itself (connection local, check mode): no container needed.
Every role first passes with good values, so each failure below comes from the one bad value it adds.

One ansible-playbook run per role checks all its cases at once: each case is an inventory host of its own
(connection local) with GOOD[role] plus the case's values as host variables, so a failure stops only that host.
Values arrive as JSON in the inventory: a string stays a string, as from an INI inventory or -e key=value.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = ("baseline", "plan", "redis", "worker", "flower", "audit", "alerts")
PLAY = """
- name: Preflight of {role}
  hosts: {hosts}
  gather_facts: false  # from the fact cache: see gather_facts_once
  tasks:
    - ansible.builtin.include_role:
        name: vpsstack.celery.{role}
        tasks_from: {tasks_from}
"""
# Good values for this controller: nofile well below any host's ceiling, a real app directory.
GOOD = {
    "baseline": {"baseline_allow_unsupported_os": True, "baseline_nofile": 4096, "baseline_swap_mb": 1},
    "plan": {},
    "redis": {"redis_maxclients": 1000, "redis_password": "admin-password", "redis_celery_password": "pw",
              "redis_allowed_hosts": ["10.0.0.0/24"]},
    "worker": {"worker_app_src": os.path.join(REPO, "examples", "demo_app"), "worker_nofile": 4096,
               "worker_broker_password": "test-password"},
    "flower": {"flower_users": [{"name": "ops", "password": "twelve chars"}], "flower_nofile": 4096,
               "flower_broker_password": "test-password", "flower_visibility_timeout": 3900},
    "audit": {},
    # With the timer switched on (bool-true) it needs somewhere to send.
    "alerts": {"alerts_webhook_url": "https://hooks.example.net/services/T0/B0/token"},
}
# Cases whose value this controller decides: the OS gate must stay open on a controller that is not Ubuntu 24.04.
CONTROLLER_DECIDES = {"baseline_allow_unsupported_os": "yes"}


def boolean_variables(role):
    """Every option of the role's argument_specs declared type bool: a new boolean is covered automatically."""
    with open(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    return sorted(name for name, spec in options.items() if spec.get("type") == "bool")


def ansible_env(workdir):
    # Facts come from a JSON fact cache filled once per run (gather_facts_once): every case host is this
    # controller, and gathering them dozens of times is most of the run time.
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
                ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
                ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORKS="8",
                ANSIBLE_DEPRECATION_WARNINGS="false", ANSIBLE_CACHE_PLUGIN="ansible.builtin.jsonfile",
                ANSIBLE_CACHE_PLUGIN_CONNECTION=str(workdir / "facts"))


def gather_facts_once(workdir, hosts):
    """Gather the controller's facts once and store them in the fact cache under every case host's name."""
    cache = workdir / "facts"
    cache.mkdir()
    seed = workdir / "seed.json"
    seed.write_text(json.dumps({"all": {"hosts": {"seed": local_host()}}}))
    subprocess.run(["ansible", "-i", str(seed), "seed", "-m", "ansible.builtin.setup"], env=ansible_env(workdir),
                   capture_output=True, text=True, check=True)
    (seeded,) = cache.iterdir()  # the file name carries a cache-format prefix (e.g. "s1_seed")
    prefix = seeded.name[:-len("seed")]
    for host in hosts:
        (cache / (prefix + host)).write_text(seeded.read_text())


def run_cases(workdir, plays, inventory):
    """Run the plays against the inventory; return {host: [failure messages]} (an empty list: it passed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    playbook = workdir / "preflight.yml"
    playbook.write_text("".join(PLAY.format(**play) for play in plays))
    inventory_file = workdir / "inventory.json"
    inventory_file.write_text(json.dumps(inventory))
    hosts = set()
    for group in [inventory["all"]] + list(inventory["all"].get("children", {}).values()):
        hosts.update(group.get("hosts", {}))
    gather_facts_once(workdir, hosts)
    proc = subprocess.run(["ansible-playbook", "--check", "-i", str(inventory_file), str(playbook)],
                          capture_output=True, text=True, env=ansible_env(workdir), check=False)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail("ansible-playbook did not report: %s %s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
    failures = {}
    for play in result["plays"]:
        for task in play["tasks"]:
            for name, host in task["hosts"].items():
                failures.setdefault(name, [])
                if host.get("failed") or host.get("unreachable"):
                    items = [r.get("msg", "") for r in host.get("results", []) if r.get("failed")]
                    failures[name] += items or [host.get("msg", "")]
    return failures


def local_host(**hostvars):
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **hostvars}


# ------------------------------------------------------------------ cases: (role, case id, extra vars, expected)
# expected: None = passes, else a string the single failure message must contain (the variable's name).
BAD = [
    ("baseline", "nofile-too-big", {"baseline_nofile": 99999999}, "baseline_nofile"),
    ("baseline", "nofile-word", {"baseline_nofile": "lots"}, "baseline_nofile"),
    ("baseline", "swappiness", {"baseline_swappiness": 201}, "baseline_swappiness"),
    ("baseline", "overcommit", {"baseline_overcommit_memory": 3}, "baseline_overcommit_memory"),
    ("baseline", "swap-unit", {"baseline_swap_mb": "2G"}, "baseline_swap_mb"),
    ("baseline", "timezone-unknown-on-target", {"baseline_timezone": "Mars/Olympus_Mons"}, "baseline_timezone"),
    ("plan", "maxmemory-percent", {"plan_redis_maxmemory": "70%"}, "redis_maxmemory"),
    # Derived from worker_strict, so type raw in the spec: the plan's own check names it.
    ("plan", "strict-word", {"plan_strict": "maybe"}, "plan_strict"),
    ("redis", "policy", {"redis_maxmemory_policy": "allkeys-lru"}, "redis_maxmemory_policy"),
    ("redis", "fsync", {"redis_appendfsync": "sometimes"}, "redis_appendfsync"),
    ("redis", "port", {"redis_port": 70000}, "redis_port"),
    ("redis", "public-bind-without-auth", {"redis_bind_extra": ["10.0.0.5"], "redis_auth_enabled": False},
     "redis_auth_enabled"),
    # The plan (a dependency) refuses first: it would size workers into memory Redis will use.
    ("redis", "maxmemory-too-big", {"redis_maxmemory": "999999mb"}, "redis_maxmemory"),
    ("redis", "maxmemory-percent", {"redis_maxmemory": "70%"}, "redis_maxmemory"),
    ("redis", "bind-string", {"redis_bind_extra": "10.0.0.5"}, "redis_bind_extra"),
    ("redis", "save-string", {"redis_save": "3600 1"}, "redis_save"),
    ("redis", "save-one-number", {"redis_save": ["3600"]}, "redis_save"),
    ("redis", "save-zero-changes", {"redis_save": ["3600 0"]}, "redis_save"),
    ("redis", "save-unit", {"redis_save": ["1h 1"]}, "redis_save"),
    ("redis", "bind-hostname", {"redis_bind_extra": ["redis.internal"], "redis_auth_enabled": True},
     "redis_bind_extra"),
    ("redis", "bind-network", {"redis_bind_extra": ["10.0.0.0/24"], "redis_auth_enabled": True},
     "redis_bind_extra"),
    ("worker", "pool", {"worker_groups": [{"name": "default", "pool": "fork"}]}, "worker_groups"),
    ("worker", "autoscale-gevent", {"worker_groups": [{"name": "io", "pool": "gevent", "autoscale": "10,2"}]},
     "autoscale"),
    ("worker", "visibility", {"worker_visibility_timeout": 60}, "worker_visibility_timeout"),
    # Above the longest ETA (3600) and above the hard limit (300), but below their sum.
    ("worker", "visibility-below-sum", {"worker_visibility_timeout": 3700}, "worker_visibility_timeout"),
    ("worker", "threads-no-limit", {"worker_groups": [{"name": "t", "pool": "threads"}]}, "worker_task_time_limit"),
    ("worker", "no-password", {"worker_broker_password": ""}, "worker_broker_url"),
    ("worker", "nofile-too-big", {"worker_nofile": 99999999}, "worker_nofile"),
    ("worker", "nofile-word", {"worker_nofile": "lots"}, "worker_nofile"),
    # Releases (tasks/app.yml): the controller keeps no release, so any rollback target is "not kept".
    ("worker", "releases-keep-one", {"worker_releases_keep": 1}, "worker_releases_keep"),
    ("worker", "releases-keep-word", {"worker_releases_keep": "many"}, "worker_releases_keep"),
    ("worker", "release-path", {"worker_release": "../../etc"}, "worker_release"),
    ("worker", "release-not-kept", {"worker_release": "src-0123456789abcdef"}, "worker_release=src-0123456789abcdef"),
    ("worker", "queue-space", {"worker_groups": [{"name": "default", "queues": ["high prio"]}]}, "worker_groups"),
    ("worker", "queue-percent", {"worker_groups": [{"name": "default", "queues": ["a%b"]}]}, "worker_groups"),
    ("worker", "extra-arg-space",
     {"worker_groups": [{"name": "default", "extra_args": ["--max-tasks-per-child 5"]}]}, "extra_args"),
    ("worker", "extra-arg-percent", {"worker_groups": [{"name": "default", "extra_args": ["--hostname=w@%h"]}]},
     "extra_args"),
    ("worker", "extra-arg-concurrency", {"worker_groups": [{"name": "default", "extra_args": ["--concurrency=8"]}]},
     "extra_args"),
    ("worker", "extra-arg-c", {"worker_groups": [{"name": "default", "extra_args": ["-c", "8"]}]}, "extra_args"),
    ("worker", "extra-arg-autoscale", {"worker_groups": [{"name": "default", "extra_args": ["--autoscale=4,1"]}]},
     "extra_args"),
    ("worker", "extra-arg-pool", {"worker_groups": [{"name": "default", "extra_args": ["--pool", "solo"]}]},
     "extra_args"),
    ("worker", "extra-arg-P", {"worker_groups": [{"name": "default", "extra_args": ["-Psolo"]}]}, "extra_args"),
    ("worker", "extra-arg-queues", {"worker_groups": [{"name": "default", "extra_args": ["-Q", "other"]}]},
     "extra_args"),
    ("worker", "extra-arg-hostname", {"worker_groups": [{"name": "default", "extra_args": ["-n", "w1"]}]},
     "extra_args"),
    ("worker", "extra-arg-max-memory",
     {"worker_groups": [{"name": "default", "extra_args": ["--max-memory-per-child=200000"]}]}, "extra_args"),
    ("worker", "group-loglevel", {"worker_groups": [{"name": "default", "loglevel": "verbose"}]}, "loglevel"),
    ("worker", "loglevel", {"worker_loglevel": "LOUD"}, "worker_loglevel"),
    ("worker", "app-percent", {"worker_app": "demo%app.tasks"}, "worker_app"),
    ("worker", "app-space", {"worker_app": "demo_app.tasks extra"}, "worker_app"),
    ("worker", "log-maxbytes-space", {"worker_log_maxbytes": "50 MB"}, "worker_log_maxbytes"),
    ("worker", "log-maxbytes-unit", {"worker_log_maxbytes": "50M"}, "worker_log_maxbytes"),
    ("worker", "stop-margin", {"worker_stop_margin": -5}, "worker_stop_margin"),
    ("worker", "results-never-expire", {"worker_result_expires": 0}, "worker_result_expires"),
    ("worker", "setting-uppercase", {"worker_extra_settings": {"Task_acks_late": True}}, "worker_extra_settings"),
    ("worker", "setting-private", {"worker_extra_settings": {"_secret": 1}}, "worker_extra_settings"),
    ("worker", "setting-dash", {"worker_extra_settings": {"task-acks-late": True}}, "worker_extra_settings"),
    ("worker", "eta-limit-zero", {"worker_eta_task_limit": 0}, "worker_eta_task_limit"),
    ("worker", "eta-limit-word", {"worker_eta_task_limit": "many"}, "worker_eta_task_limit"),
    ("worker", "eta-limit-not-above-concurrency", {"worker_eta_task_limit": 1}, "worker_eta_task_limit"),
    ("worker", "soft-shutdown-negative", {"worker_soft_shutdown_timeout": -5}, "worker_soft_shutdown_timeout"),
    ("worker", "poison-max-lost-word", {"worker_poison_max_lost": "often"}, "worker_poison_max_lost"),
    ("worker", "disable-prefetch-word", {"worker_groups": [{"name": "default", "disable_prefetch": "sometimes"}]},
     "disable_prefetch"),
    ("worker", "watchdog-interval-short", {"worker_watchdog_interval": 2}, "worker_watchdog_interval"),
    ("worker", "watchdog-interval-unit", {"worker_watchdog_interval": "1m"}, "worker_watchdog_interval"),
    ("worker", "watchdog-failures-zero", {"worker_watchdog_failures": 0}, "worker_watchdog_failures"),
    ("worker", "watchdog-timeout-above-interval", {"worker_watchdog_interval": 30, "worker_watchdog_ping_timeout": 45},
     "worker_watchdog_ping_timeout"),
    ("worker", "watchdog-timeout-zero", {"worker_watchdog_ping_timeout": 0}, "worker_watchdog_ping_timeout"),
    ("redis", "worker-hosts-string", {"redis_worker_hosts": "worker1"}, "redis_worker_hosts"),
    ("redis", "restart-wait-zero", {"redis_restart_wait_timeout": 0}, "redis_restart_wait_timeout"),
    ("flower", "weak-password", {"flower_users": [{"name": "ops", "password": "short"}]}, "flower_users"),
    ("flower", "plain-http", {"flower_listen_address": "10.0.0.5"}, "flower_listen_address"),
    ("flower", "nofile-too-big", {"flower_nofile": 99999999}, "flower_nofile"),
    ("flower", "nofile-word", {"flower_nofile": "lots"}, "flower_nofile"),
    ("flower", "socket", {"flower_socket": "/tmp/flower.sock"}, "flower_socket"),
    ("flower", "visibility-unknown", {"flower_visibility_timeout": "auto"}, "flower_visibility_timeout"),
    ("flower", "memory-high-tiny", {"flower_memory_high_mb": 10}, "flower_memory_high_mb"),
    ("flower", "memory-max-below-high", {"flower_memory_high_mb": 200, "flower_memory_max_mb": 100},
     "flower_memory_max_mb"),
    ("flower", "memory-word", {"flower_memory_high_mb": "lots"}, "flower_memory_high_mb"),
    ("audit", "memory-warn-above-fail", {"audit_redis_memory_warn_pct": 96}, "audit_redis_memory_warn_pct"),
    ("audit", "queue-word", {"audit_queue_warn_length": "many"}, "audit_queue_warn_length"),
    ("audit", "unacked-over-100", {"audit_unacked_warn_pct": 120}, "audit_unacked_warn_pct"),
    ("audit", "swap-negative", {"audit_swap_warn_pct": -1}, "audit_swap_warn_pct"),
    ("alerts", "timer-without-target", {"alerts_timer_enabled": "true", "alerts_webhook_url": ""},
     "alerts_timer_enabled"),
    ("alerts", "webhook-not-a-url", {"alerts_webhook_url": "hooks.slack.com/services/T0"}, "alerts_webhook_url"),
    ("alerts", "check-interval-short", {"alerts_check_interval": 10}, "alerts_check_interval"),
    ("alerts", "repeat-unit", {"alerts_repeat_interval": "1h"}, "alerts_repeat_interval"),
    ("alerts", "http-timeout-zero", {"alerts_http_timeout": 0}, "alerts_http_timeout"),
    ("alerts", "min-status", {"alerts_min_status": "INFO"}, "alerts_min_status"),
    ("alerts", "email-string", {"alerts_email_to": "ops@example.net"}, "alerts_email_to"),
    ("alerts", "email-not-an-address", {"alerts_email_to": ["ops at example.net"]}, "alerts_email_to"),
    ("alerts", "email-from-two", {"alerts_email_from": "a@example.net, b@example.net"}, "alerts_email_from"),
    ("alerts", "textfile-relative", {"alerts_textfile_dir": "node-exporter"}, "alerts_textfile_dir"),
    ("alerts", "rules-dest-not-yaml", {"alerts_prometheus_rules_dest": "/tmp/rules.txt"},
     "alerts_prometheus_rules_dest"),
    ("alerts", "for-words", {"alerts_prometheus_for": "five minutes"}, "alerts_prometheus_for"),
    ("alerts", "instance-empty", {"alerts_prometheus_instance": ""}, "alerts_prometheus_instance"),
    ("alerts", "flower-job-empty", {"alerts_prometheus_flower_job": ""}, "alerts_prometheus_flower_job"),
    ("alerts", "exporter-listen-port-only", {"alerts_redis_exporter_listen": ":9121"}, "alerts_redis_exporter_listen"),
]
# Values near the refusals that must still pass.
EDGE = [
    ("baseline", "nofile-auto", {"baseline_nofile": "auto"}),
    ("plan", "maxmemory-units", {"plan_redis_maxmemory": "256MB"}),
    ("redis", "binds-ipv4-ipv6-optional", {"redis_bind_extra": ["10.0.0.5", "-fd00::5"], "redis_save": [],
                                           "redis_auth_enabled": "yes", "redis_maxmemory": "64mb"}),
    ("worker", "nofile-auto-and-legit-args", {
        "worker_nofile": "auto", "worker_loglevel": "debug", "worker_log_maxbytes": "1gb", "worker_stop_margin": 0,
        "worker_extra_settings": {"task_default_queue": "celery"},
        "worker_groups": [{"name": "default", "loglevel": "warning", "queues": ["celery", "high-prio"],
                           "extra_args": ["--without-gossip", "-O", "fair", "--prefetch-multiplier=1"]}]}),
    ("worker", "results-never-expire-under-noeviction",
     {"worker_result_expires": 0, "redis_maxmemory_policy": "noeviction"}),
    ("worker", "celery-5.6-options", {"worker_eta_task_limit": "100", "worker_soft_shutdown_timeout": "2.5",
                                      "worker_poison_max_lost": "3",
                                      "worker_groups": [{"name": "default", "disable_prefetch": "yes"}]}),
    # -e worker_watchdog_interval=10 arrives as a string; a timeout equal to the interval is allowed.
    ("worker", "watchdog-as-strings", {"worker_watchdog_enabled": "yes", "worker_watchdog_interval": "10",
                                       "worker_watchdog_failures": "1", "worker_watchdog_ping_timeout": "10"}),
    # Switched off, its numbers are not checked (the timer is removed).
    ("worker", "watchdog-off", {"worker_watchdog_enabled": "false", "worker_watchdog_interval": 0}),
    ("redis", "worker-hosts-list", {"redis_worker_hosts": [], "redis_restart_wait_timeout": "60"}),
    ("flower", "nofile-auto", {"flower_nofile": "auto"}),
    # -e audit_queue_warn_length=5 arrives as a string.
    ("audit", "thresholds-as-strings", {"audit_queue_warn_length": "5", "audit_swap_fail_pct": "100"}),
    ("flower", "memory-caps-set", {"flower_memory_high_mb": "64", "flower_memory_max_mb": 64}),
    # INI strings; mail only, no webhook; the shortest interval.
    ("alerts", "strings-and-mail-only", {"alerts_timer_enabled": "yes", "alerts_webhook_url": "",
                                         "alerts_email_to": ["ops@example.net"], "alerts_check_interval": "60",
                                         "alerts_repeat_interval": "0", "alerts_min_status": "FAIL"}),
]


def all_cases():
    cases = {role: {"good": (GOOD[role], None)} for role in ROLES}
    for role, case, extra, named in BAD:
        cases[role]["bad-" + case] = ({**GOOD[role], **extra}, named)
    for role, case, extra in EDGE:
        cases[role]["edge-" + case] = ({**GOOD[role], **extra}, None)
    for role in ROLES:
        names = boolean_variables(role)
        # The plan (a dependency) checks plan_strict, which follows worker_strict: keep it a real boolean there, so
        # that the role's own entry point is what refuses.
        pinned = {"plan_strict": True} if role != "plan" else {}
        for word in ("true", "false"):
            values = {name: CONTROLLER_DECIDES.get(name, word) if word == "false" else word for name in names}
            cases[role]["bool-" + word] = ({**GOOD[role], **pinned, **values}, None)
        cases[role]["bool-maybe"] = ({**GOOD[role], **pinned, **{name: "maybe" for name in names}}, names)
    return cases


CASES = all_cases()


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    """Run every role's cases once (one playbook run per role) and cache the failures per case."""
    results = {}

    def get(role):
        if role not in results:
            workdir = tmp_path_factory.mktemp(role)
            hosts = {case: local_host(**values) for case, (values, _named) in CASES[role].items()}
            swap = swap_cases(workdir) if role == "baseline" else {}
            hosts.update({case: local_host(**GOOD[role], **values) for case, (values, _named) in swap.items()})
            results[role] = run_cases(workdir, [{"role": role, "hosts": "all", "tasks_from": "preflight"}],
                                      {"all": {"hosts": hosts}})
        return results[role]
    return get


def swap_cases(workdir):
    """An existing file at baseline_swap_file: refused without a swap signature, accepted with one."""
    junk, swap = workdir / "not-swap", workdir / "swap"
    junk.write_bytes(b"precious data\n" * 1000)
    swap.write_bytes(b"\0" * 1048576)
    subprocess.run(["mkswap", str(swap)], check=True, capture_output=True)
    return {
        "bad-swap-file-without-signature": ({"baseline_swap_supported": True, "baseline_swap_file": str(junk)},
                                            "baseline_swap_file"),
        "edge-swap-file-with-signature": ({"baseline_swap_supported": True, "baseline_swap_file": str(swap)}, None),
    }


def case_ids(prefix):
    return [(role, case) for role in ROLES for case in CASES[role] if case.startswith(prefix)]


@pytest.mark.parametrize("role, case", case_ids("good") + case_ids("edge-") + case_ids("bool-true")
                         + case_ids("bool-false"))
def test_passes(outcome, role, case):
    assert outcome(role)[case] == []


@pytest.mark.parametrize("role, case", case_ids("bad-"))
def test_bad_value_fails_naming_the_variable(outcome, role, case):
    failures = outcome(role)[case]
    named = CASES[role][case][1]
    assert len(failures) == 1, failures
    assert named in failures[0], failures


@pytest.mark.parametrize("role", [role for role in ROLES if boolean_variables(role)])
def test_every_boolean_refuses_a_non_boolean_string(outcome, role):
    failures = outcome(role)["bool-maybe"]
    names = CASES[role]["bool-maybe"][1]
    assert names, "no type: bool option in %s's argument_specs" % role
    # Refused by Ansible's validation of the entry point against meta/argument_specs.yml (the same options as main),
    # one message naming every bad switch.
    for name in names:
        assert any("argument '%s' is of type str and we were unable to convert to bool" % name in msg
                   for msg in failures), (name, failures)


def test_existing_swap_file_must_be_swap(outcome):
    # These cases need files, so the baseline run adds them (swap_cases) instead of CASES.
    result = outcome("baseline")
    assert result["edge-swap-file-with-signature"] == []
    failures = result["bad-swap-file-without-signature"]
    assert len(failures) == 1 and "baseline_swap_file" in failures[0], failures


# ------------------------------------------------------------------ broker address (inventory with a redis group)
def broker_inventory():
    redis_host = local_host(redis_bind_extra=["10.0.0.5"])
    app = {"worker": GOOD["worker"], "flower": GOOD["flower"]}
    cases = {}
    for role in ("worker", "flower"):
        key = role + "_broker_host"
        cases[role] = {
            role + "-bind-address": ({key: "10.0.0.5"}, None),
            role + "-loopback": ({key: "127.0.0.1"}, [key, "redis_bind_extra"]),
            role + "-other-address": ({key: "10.9.9.9"}, [key, "redis_bind_extra"]),
        }
    inventory = {"all": {"children": {
        "redis": {"hosts": {"redis-host": redis_host,
                            "colocated-worker": local_host(**GOOD["worker"], worker_broker_host="127.0.0.1")}},
        "workers": {"hosts": {"colocated-worker": {}, **{
            case: local_host(**app["worker"], **values) for case, (values, _named) in cases["worker"].items()}}},
        "flower": {"hosts": {
            case: local_host(**app["flower"], **values) for case, (values, _named) in cases["flower"].items()}},
    }}}
    return inventory, {**cases["worker"], **cases["flower"], "colocated-worker": ({}, None)}


BROKER_INVENTORY, BROKER_CASES = broker_inventory()


@pytest.fixture(scope="module")
def broker_outcome(tmp_path_factory):
    plays = [{"role": "worker", "hosts": "workers", "tasks_from": "preflight"},
             {"role": "flower", "hosts": "flower", "tasks_from": "preflight"}]
    return run_cases(tmp_path_factory.mktemp("broker"), plays, BROKER_INVENTORY)


@pytest.mark.parametrize("case", sorted(BROKER_CASES))
def test_broker_host_must_be_a_redis_bind_address(broker_outcome, case):
    failures = broker_outcome[case]
    named = BROKER_CASES[case][1]
    if named is None:
        assert failures == []
    else:
        assert len(failures) == 1 and all(word in failures[0] for word in named), failures


# ------------------------------------------------------------------ the plan reads the other roles' variables
def test_plan_counts_rdb_only_persistence_and_the_workers_results(tmp_path):
    """redis_appendonly false with save points still forks (BGSAVE): the plan keeps the fork headroom. Results that
    workers elsewhere in the inventory keep in the broker's Redis (INI strings) are counted on the Redis host."""
    inventory = {"all": {"children": {
        "redis": {"hosts": {
            "rdb-only": local_host(plan_redis_local=True, redis_appendonly="false", redis_save=["3600 1"]),
            "no-persistence": local_host(plan_redis_local=True, redis_appendonly="false", redis_save=[])}},
        "workers": {"hosts": {
            "results-worker": local_host(plan_redis_local=False, worker_result_backend="broker",
                                         worker_result_expires="3600"),
            "other-worker": local_host(plan_redis_local=False, worker_result_backend="")}}}}}
    workdir = tmp_path / "plan"
    workdir.mkdir()
    (workdir / "show.yml").write_text(
        "- hosts: all\n  gather_facts: true\n  roles: [vpsstack.celery.plan]\n  tasks:\n"
        "    - ansible.builtin.debug:\n        msg: \"headroom={{ vpsstack_plan.redis.fork_headroom_mb }}"
        " results={{ (vpsstack_plan.redis.results or {}).expires_s | default(0) }}\"\n")
    (workdir / "inventory.json").write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "--check", "-i", str(workdir / "inventory.json"),
                           str(workdir / "show.yml")], capture_output=True, text=True, env=env, check=False)
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    shown = dict(sorted((host, result["msg"]) for host, result in tasks[-1]["hosts"].items()))
    assert shown["no-persistence"] == "headroom=0 results=3600", shown
    assert shown["rdb-only"].startswith("headroom=") and not shown["rdb-only"].startswith("headroom=0 "), shown
    assert shown["rdb-only"].endswith(" results=3600"), shown
    # No Redis on a worker host: nothing to count there.
    assert shown["results-worker"].endswith(" results=0"), shown
