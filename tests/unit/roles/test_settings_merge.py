"""The host's guarantees meet the project's settings (roles/worker/files/vpsstack_settings_merge.py) and the deploy
check compares producers with workers (vpsstack_celery_check.py), on real Celery apps of tests/apps."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from role_files import REPO, load_worker_file

merge = load_worker_file("vpsstack_settings_merge")
FILES = os.path.join(REPO, "roles", "worker", "files")
check = load_worker_file("vpsstack_celery_check")

OURS = {"broker_url": "redis://celery:pw@10.0.0.5:6379/0", "task_acks_late": True,
        "broker_transport_options": {"visibility_timeout": 3900, "socket_timeout": 30}}


def test_the_projects_transport_keys_stay_and_ours_win():
    project = {"broker_transport_options": {"global_keyprefix": "shop:", "priority_steps": [0, 5, 9],
                                            "socket_timeout": 5, "visibility_timeout": 60},
               "task_acks_late": False}
    updates = merge.enforced_updates(project, OURS)
    assert updates["broker_transport_options"] == {"global_keyprefix": "shop:", "priority_steps": [0, 5, 9],
                                                   "socket_timeout": 30, "visibility_timeout": 3900}
    assert updates["task_acks_late"] is True and updates["broker_url"] == OURS["broker_url"]


def test_a_longer_visibility_timeout_of_the_project_is_kept():
    updates = merge.enforced_updates({"broker_transport_options": {"visibility_timeout": 7200}}, OURS)
    assert updates["broker_transport_options"]["visibility_timeout"] == 7200


def test_a_project_without_the_setting_gets_ours_unchanged():
    assert merge.enforced_updates({}, OURS) == OURS


def test_mismatched_accepts_merged_dicts_and_names_what_is_not_honoured():
    loaded = dict(OURS, broker_transport_options={"visibility_timeout": 7200, "socket_timeout": 30, "sep": ":"})
    assert merge.mismatched(loaded, OURS) == []
    loaded["broker_transport_options"]["visibility_timeout"] = 60
    loaded["task_acks_late"] = False
    assert merge.mismatched(loaded, OURS) == ["broker_transport_options", "task_acks_late"]
    assert merge.mismatched({}, OURS) == sorted(OURS)


@pytest.mark.parametrize("ours, theirs, expected", [
    ("redis://u:a@127.0.0.1:6379/0", "redis://localhost:6379", []),
    ("redis://u:a@10.0.0.5:6379/0", "redis://other:b@10.0.0.5:6379/0", []),
    ("redis://u:a@127.0.0.1:6379/0", "redis://localhost:6390/9", ["port", "database"]),
    ("redis://u:a@10.0.0.5:6379/0", "redis://10.0.0.6:6379/0", ["host"]),
    ("redis://u:a@10.0.0.5:6379/0", "amqp://guest@localhost//", ["URL"]),
    ("redis://u:a@10.0.0.5:6379/1", "django-db", ["URL"]),
    ("", "", []),
])
def test_endpoint_differences(ours, theirs, expected):
    assert merge.endpoint_differences(ours, theirs) == expected


def test_mask_hides_the_password_only():
    assert merge.mask("redis://celery:s%2Fecret@10.0.0.5:6379/0") == "redis://celery:***@10.0.0.5:6379/0"
    assert merge.mask("redis://10.0.0.5:6379/0") == "redis://10.0.0.5:6379/0"
    assert merge.mask(None) == ""


@pytest.mark.parametrize("conf, expected", [
    ({"task_serializer": "json", "accept_content": ["json"]}, []),
    ({"task_serializer": "pickle", "accept_content": ["json", "application/x-python-serialize"]},
     ["task_serializer"]),
    ({"accept_content": ["json", "pickle"], "result_accept_content": ["application/python-pickle"]},
     ["accept_content", "result_accept_content"]),
    ({"accept_content": ["msgpack"]}, []),
])
def test_pickle_settings_are_found(conf, expected):
    assert check.pickle_settings(conf) == expected


WORKERS = {"broker": "redis://celery:pw@127.0.0.1:6379/0", "backend": "", "keyprefix": "", "visibility_timeout": 3900}


def test_compare_reports_differences_apart_from_what_producers_leave_unset():
    assert check.compare(WORKERS, dict(WORKERS, broker="redis://localhost:6390/9")) == (
        {"broker": ["port", "database"]}, [])
    assert check.compare(WORKERS, dict(WORKERS, broker="")) == ({}, ["broker"])
    assert check.compare(WORKERS, dict(WORKERS, keyprefix="shop:")) == ({"broker": ["global_keyprefix"]}, [])
    assert check.compare(WORKERS, {"error": "ImportError: x"}) == ({}, [])


def bare(app, env=None):
    """The check's producer view of a real app of tests/apps, in a clean interpreter as on the host."""
    cwd = os.path.join(REPO, "tests", "apps", "own_celeryconfig")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    environ.update(PYTHONPATH=cwd, **(env or {}))
    proc = subprocess.run([sys.executable, os.path.join(FILES, "vpsstack_celery_check.py"), "--bare", app],
                          cwd=cwd, env=environ, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(proc.stdout)


def test_the_projects_own_celeryconfig_is_what_its_producers_use():
    seen = bare("shopapp")
    assert seen["broker"] == "redis://127.0.0.1:6390/9" and seen["backend"] == "redis://127.0.0.1:6390/10"
    assert check.compare(dict(WORKERS, backend="redis://celery:pw@127.0.0.1:6379/1"), seen)[0] == {
        "broker": ["port", "database"], "backend": ["port", "database"]}


def test_the_producer_file_wins_over_the_projects_settings():
    env = {"CELERY_BROKER_URL": WORKERS["broker"], "CELERY_RESULT_BACKEND": "redis://celery:pw@127.0.0.1:6379/1"}
    seen = bare("shopapp", env)
    assert check.compare(dict(WORKERS, backend=env["CELERY_RESULT_BACKEND"]), seen) == ({}, [])
