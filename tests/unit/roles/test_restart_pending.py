"""The worker role's worker_stale_programs and worker_nofile_drift (roles/worker/vars/main.yml), the redis role's
redis_stale_files (roles/redis/vars/main.yml) and the flower role's flower_stale_files, evaluated by
ansible-playbook on localhost from each role's own vars file, case by case: what a run that failed before its
handlers leaves behind, and what it must not mistake for that."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from role_files import REPO, role_path

CONF = "/etc/supervisor/conf.d/celery-%s.conf"
SETTINGS = "/etc/celery/vpsstack_celery_settings.py"
CHECK = "/etc/celery/vpsstack_celery_check.py"  # a tool: the programs do not read it
STARTED = 1000.0
# A converged host: both groups started after every file they read; the limits as the role sets them.
BASE = {
    "worker_groups": [{"name": "default"}, {"name": "io"}],
    "worker_config_dir": "/etc/celery",
    "worker_producer_env_file": "/etc/celery/producer.env",
    "worker_nofile_limit": "20000",
    "plan_host": {"workers": {"default": {"started": STARTED, "nofile": 20000},
                              "io": {"started": STARTED + 50, "nofile": 20000}}},
    "worker_settings_files": {"changed_files": [], "mtimes": {SETTINGS: STARTED - 60, CHECK: STARTED + 500}},
    "worker_program_files": {"changed_files": [], "mtimes": {CONF % "default": STARTED - 60,
                                                             CONF % "io": STARTED - 60}},
    "worker_app_dir_stat": {"stat": {"islnk": True, "mtime": STARTED - 60}},
}
CASES = {
    "converged": ({}, [], []),
    # The settings module changed after both started, and no run restarted them.
    "settings newer": ({"worker_settings_files": {"changed_files": [], "mtimes": {SETTINGS: STARTED + 100}}},
                       ["celery-default", "celery-io"], []),
    # This run writes it: its own handler restarts them, nothing is pending.
    "settings changed now": ({"worker_settings_files": {"changed_files": [SETTINGS],
                                                        "mtimes": {SETTINGS: STARTED + 100}}}, [], []),
    # Within the 2 s the start time may be early by.
    "within the margin": ({"worker_settings_files": {"changed_files": [], "mtimes": {SETTINGS: STARTED + 1.5}}},
                          [], []),
    # One group's program file: that group only.
    "program file newer": (
        {"worker_program_files": {"changed_files": [], "mtimes": {CONF % "default": STARTED + 9,
                                                                  CONF % "io": STARTED - 9}}},
        ["celery-default"], []),
    "link newer": ({"worker_app_dir_stat": {"stat": {"islnk": True, "mtime": STARTED + 20}}}, ["celery-default"], []),
    "link switched now": ({"worker_app_dir_stat": {"stat": {"islnk": True, "mtime": STARTED + 20}},
                           "worker_app_link": {"changed": True}}, [], []),
    # pip sources: the app directory is a directory, its mtime says nothing about the code.
    "app directory": ({"worker_app_dir_stat": {"stat": {"islnk": False, "isdir": True, "mtime": STARTED + 20}}},
                      [], []),
    # No worker runs yet (first run, check mode on a new host) or the start time was unreadable.
    "nothing running": ({"plan_host": {"workers": {}}}, [], []),
    "no plan_host": ({"plan_host": {}}, [], []),
    "start unknown": ({"plan_host": {"workers": {"default": {"started": None, "nofile": None}}},
                       "worker_settings_files": {"changed_files": [], "mtimes": {SETTINGS: STARTED + 100}}}, [], []),
    # A deploy.yml run renders no settings; a tag-limited run may render nothing.
    "nothing rendered": ({"worker_settings_files": None, "worker_program_files": None, "worker_app_dir_stat": None},
                         [], []),
    "lower limit": ({"plan_host": {"workers": {"default": {"started": STARTED, "nofile": 1024}}}},
                    [], ["celery-default runs with 1024"]),
}
RESTART_CONF, RUNTIME_CONF = "/etc/redis/redis.d/restart.conf", "/etc/redis/redis.d/runtime.conf"
DROP_IN = "/etc/systemd/system/redis-server.service.d/vpsstack.conf"
REDIS_BASE = {
    "plan_host": {"started": {"redis-server.service": STARTED}},
    "redis_settings_files": {"changed_files": [], "mtimes": {RESTART_CONF: STARTED - 60, RUNTIME_CONF: STARTED - 60}},
    "redis_unit_files": {"changed_files": [], "mtimes": {DROP_IN: STARTED - 60}},
}
REDIS_CASES = {
    "redis converged": ({}, []),
    "restart.conf newer": ({"redis_settings_files": {"changed_files": [], "mtimes": {RESTART_CONF: STARTED + 30}}},
                           [RESTART_CONF]),
    "restart.conf written now": ({"redis_settings_files": {"changed_files": [RESTART_CONF],
                                                           "mtimes": {RESTART_CONF: STARTED + 30}}}, []),
    # Applied with CONFIG SET, never by a restart: newer than the server whenever it changed.
    "runtime.conf newer": ({"redis_settings_files": {"changed_files": [], "mtimes": {RUNTIME_CONF: STARTED + 30}}},
                           []),
    "drop-in newer": ({"redis_unit_files": {"changed_files": [], "mtimes": {DROP_IN: STARTED + 30}}}, [DROP_IN]),
    "redis not running": ({"plan_host": {"started": {}}}, []),
    "redis nothing rendered": ({"redis_settings_files": None, "redis_unit_files": None}, []),
}

FLOWER_SETTINGS, FLOWER_UNIT = "/etc/flower/vpsstack_flower_settings.py", "/etc/systemd/system/flower.service"
FLOWER_BASE = {
    "plan_host": {"started": {"flower.service": STARTED}},
    "flower_service_files": {"changed_files": [], "mtimes": {FLOWER_SETTINGS: STARTED - 60, FLOWER_UNIT: STARTED - 60}},
}
FLOWER_CASES = {
    "flower converged": ({}, []),
    "flower settings newer": ({"flower_service_files": {"changed_files": [], "mtimes": {
        FLOWER_SETTINGS: STARTED + 30, FLOWER_UNIT: STARTED - 60}}}, [FLOWER_SETTINGS]),
    "flower unit written now": ({"flower_service_files": {"changed_files": [FLOWER_UNIT], "mtimes": {
        FLOWER_SETTINGS: STARTED - 60, FLOWER_UNIT: STARTED + 30}}}, []),
    "flower within the margin": ({"flower_service_files": {"changed_files": [], "mtimes": {
        FLOWER_SETTINGS: STARTED + 1.5}}}, []),
    "flower not running": ({"plan_host": {"started": {"redis-server.service": STARTED}}}, []),
    "flower nothing rendered": ({"flower_service_files": None}, []),
}


def case_vars(base, overrides):
    return {key: value for key, value in dict(base, **overrides).items() if value is not None}


PLAY = [{"hosts": "localhost", "gather_facts": False, "vars_files": [role_path("worker", "vars", "main.yml")],
         "tasks": [{"name": name, "ansible.builtin.debug": {
             "msg": "{{ {'stale': worker_stale_programs, 'drift': worker_nofile_drift} | to_json }}"},
             "vars": case_vars(BASE, overrides)} for name, (overrides, _stale, _drift) in CASES.items()]},
        {"hosts": "localhost", "gather_facts": False, "vars_files": [role_path("redis", "vars", "main.yml")],
         "tasks": [{"name": name, "ansible.builtin.debug": {"msg": "{{ redis_stale_files | to_json }}"},
                    "vars": case_vars(REDIS_BASE, overrides)} for name, (overrides, _stale) in REDIS_CASES.items()]},
        {"hosts": "localhost", "gather_facts": False, "vars_files": [role_path("flower", "vars", "main.yml")],
         "tasks": [{"name": name, "ansible.builtin.debug": {"msg": "{{ flower_stale_files | to_json }}"},
                    "vars": case_vars(FLOWER_BASE, overrides)} for name, (overrides, _stale) in FLOWER_CASES.items()]}]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    play = tmp_path_factory.mktemp("restart-pending") / "play.yml"
    play.write_text(yaml.safe_dump(PLAY))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
                           "ansible_python_interpreter=" + sys.executable, str(play)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plays = json.loads(proc.stdout)["plays"]
    return {t["task"]["name"]: json.loads(t["hosts"]["localhost"]["msg"]) for p in plays for t in p["tasks"]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_counts_as_a_restart_a_run_left_pending(results, case):
    _overrides, stale, drift = CASES[case]
    assert results[case] == {"stale": stale, "drift": drift}


@pytest.mark.parametrize("case", sorted(REDIS_CASES))
def test_what_counts_as_a_redis_restart_a_run_left_pending(results, case):
    assert results[case] == REDIS_CASES[case][1]


@pytest.mark.parametrize("case", sorted(FLOWER_CASES))
def test_what_counts_as_a_flower_restart_a_run_left_pending(results, case):
    assert results[case] == FLOWER_CASES[case][1]
