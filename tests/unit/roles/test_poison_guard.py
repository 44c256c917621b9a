"""The poison-task guard's decisions (roles/worker/files/vpsstack_poison_guard.py), without a broker or Celery.

The controller's venv has no Celery, so the few Celery names the module imports are stand-ins here: a base
Request whose on_failure records the requeue flags it sees (what Celery 5.7.0 decides on: reject(requeue=True)
while reject_on_worker_lost/retry_on_worker_lost are set, acknowledge + FAILURE otherwise). That Celery really
acts on them is proven live by molecule/deploy/tests/test_poison.py.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PATH = os.path.join(REPO, "roles", "worker", "files", "vpsstack_poison_guard.py")
DEFAULT_REQUEST = "celery.worker.request:Request"


class WorkerLostError(Exception):
    pass


class ExceptionWithTraceback(Exception):
    def __init__(self, exc):
        super().__init__(exc)
        self.exc = exc


class BaseRequest:
    """Stand-in for celery.worker.request.Request: records the flags its on_failure would act on."""

    _already_cancelled = False
    _already_revoked = False

    def __init__(self, task, channel, task_id="id-1", name="app.poison"):
        self._task = task
        self.message = types.SimpleNamespace(channel=channel)
        self.id = task_id
        self.name = name
        self.seen = []

    @property
    def task(self):
        return self._task

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        requeue = bool(self.task.reject_on_worker_lost or self.task.retry_on_worker_lost)
        self.seen.append("requeue" if requeue else "ack+failure")
        return self.seen[-1]


class Task:
    """The shared task object: class-level flags, as Celery's from_config sets them."""

    Request = DEFAULT_REQUEST
    acks_late = True
    reject_on_worker_lost = True
    retry_on_worker_lost = False


@pytest.fixture(name="guard")
def fixture_guard(monkeypatch):
    stubs = {
        "billiard": types.ModuleType("billiard"),
        "billiard.einfo": types.ModuleType("billiard.einfo"),
        "celery": types.ModuleType("celery"),
        "celery.app": types.ModuleType("celery.app"),
        "celery.app.task": types.ModuleType("celery.app.task"),
        "celery.exceptions": types.ModuleType("celery.exceptions"),
        "celery.worker": types.ModuleType("celery.worker"),
        "celery.worker.request": types.ModuleType("celery.worker.request"),
    }
    stubs["billiard.einfo"].ExceptionWithTraceback = ExceptionWithTraceback
    stubs["celery.exceptions"].WorkerLostError = WorkerLostError
    stubs["celery.worker.request"].Request = BaseRequest
    root = type("Task", (), {"Request": DEFAULT_REQUEST})
    stubs["celery.app.task"].Task = root
    stubs["celery.app"].task = stubs["celery.app.task"]
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("vpsstack_poison_guard", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT_TASK = root
    return module


class Channel:
    """kombu's Redis channel as the guard uses it: conn_or_acquire() -> a client with a MULTI/EXEC pipeline."""

    def __init__(self, fail=False):
        self.counts = {}
        self.ttls = {}
        self.fail = fail

    @contextlib.contextmanager
    def conn_or_acquire(self):
        if self.fail:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        yield self

    def pipeline(self):
        return Pipeline(self)


class Pipeline:
    def __init__(self, channel):
        self.channel = channel
        self.commands = []

    def incr(self, key):
        self.commands.append(("incr", key))

    def expire(self, key, seconds):
        self.commands.append(("expire", key, seconds))

    def execute(self):
        results = []
        for command in self.commands:
            if command[0] == "incr":
                self.channel.counts[command[1]] = self.channel.counts.get(command[1], 0) + 1
                results.append(self.channel.counts[command[1]])
            else:
                self.channel.ttls[command[1]] = command[2]
                results.append(True)
        return results


def lost():
    return types.SimpleNamespace(exception=ExceptionWithTraceback(WorkerLostError("signal 9 (SIGKILL)")))


@pytest.mark.parametrize("count, max_lost, expected", [
    (1, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (1, 1, True),
    (None, 3, False),  # Redis failed: requeue, never lose the task
    (5, 0, False),  # guard off
])
def test_give_up_at_the_limit_only(guard, count, max_lost, expected):
    assert guard.give_up(count, max_lost) is expected


@pytest.mark.parametrize("exc, cancelled, expected", [
    (WorkerLostError("signal 9"), False, True),
    (ExceptionWithTraceback(WorkerLostError("signal 11")), False, True),
    (SystemExit(1), False, True),  # billiard >= 4.3: the exit reported before the child is gone
    (SystemExit(1), True, False),  # the child died of our own revoke/cancel: Celery does not requeue it
    (ValueError("a task's own error"), False, False),
])
def test_lost_worker_follows_celerys_own_tests(guard, exc, cancelled, expected):
    assert guard.lost_worker(exc, cancelled) is expected


@pytest.mark.parametrize("acks_late, reject, retry, expected", [
    (True, True, False, True), (True, False, True, True), (True, False, False, False), (False, True, True, False),
])
def test_only_tasks_celery_would_send_again_are_counted(guard, acks_late, reject, retry, expected):
    task = types.SimpleNamespace(acks_late=acks_late, reject_on_worker_lost=reject, retry_on_worker_lost=retry)
    assert guard.requeues(task) is expected


def test_requeued_until_the_limit_then_acked_and_failed(guard, caplog):
    guard.install(3)
    task, channel = Task(), Channel()
    caplog.set_level(logging.WARNING, logger="vpsstack_poison_guard")
    seen = [guard.GuardRequest(task, channel, task_id="t-42").on_failure(lost()) for _attempt in range(4)]
    assert seen == ["requeue", "requeue", "ack+failure", "ack+failure"]
    assert channel.counts == {"vpsstack:lost:t-42": 4}
    assert channel.ttls == {"vpsstack:lost:t-42": 86400}
    # The shared task object is as before: its class flags, no instance attribute left behind.
    assert task.reject_on_worker_lost is True and task.retry_on_worker_lost is False
    assert not {"reject_on_worker_lost", "retry_on_worker_lost"} & set(vars(task))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].startswith("Poison task app.poison[t-42]: its worker child was lost 3 times"), errors


def test_counts_are_per_task_id(guard):
    guard.install(2)
    task, channel = Task(), Channel()
    assert guard.GuardRequest(task, channel, task_id="a").on_failure(lost()) == "requeue"
    assert guard.GuardRequest(task, channel, task_id="b").on_failure(lost()) == "requeue"
    assert guard.GuardRequest(task, channel, task_id="a").on_failure(lost()) == "ack+failure"


def test_a_count_from_before_a_restart_counts(guard):
    # The counter lives in Redis, not in the worker: two losses seen by an earlier worker process (or another
    # host) and one more here reach the limit.
    guard.install(3)
    channel = Channel()
    channel.counts["vpsstack:lost:t-7"] = 2
    assert guard.GuardRequest(Task(), channel, task_id="t-7").on_failure(lost()) == "ack+failure"


def test_redis_failure_falls_back_to_celerys_requeue(guard, caplog):
    guard.install(1)
    caplog.set_level(logging.WARNING, logger="vpsstack_poison_guard")
    request = guard.GuardRequest(Task(), Channel(fail=True), task_id="t-9")
    assert request.on_failure(lost()) == "requeue"
    assert "cannot count the lost worker of app.poison[t-9]" in caplog.text


@pytest.mark.parametrize("exc", [ValueError("boom"), ExceptionWithTraceback(KeyError("x"))])
def test_other_failures_are_not_counted(guard, exc):
    guard.install(1)
    channel = Channel()
    guard.GuardRequest(Task(), channel).on_failure(types.SimpleNamespace(exception=exc))
    assert not channel.counts


def test_guard_off_counts_nothing(guard):
    guard.install(0)
    channel = Channel()
    assert guard.GuardRequest(Task(), channel).on_failure(lost()) == "requeue"
    assert not channel.counts


def test_flags_set_on_the_task_object_are_restored_even_on_error(guard):
    task = Task()
    task.reject_on_worker_lost = "own"
    with pytest.raises(RuntimeError):
        with guard.no_requeue(task):
            assert task.reject_on_worker_lost is False and task.retry_on_worker_lost is False
            raise RuntimeError
    assert task.reject_on_worker_lost == "own"
    assert "retry_on_worker_lost" not in vars(task)


def test_install_sets_the_root_task_request_unless_replaced(guard):
    guard.install(0)
    assert guard.ROOT_TASK.Request == DEFAULT_REQUEST
    guard.install("3")  # from an INI inventory the template still renders an int; a string works too
    assert guard.ROOT_TASK.Request is guard.GuardRequest
    assert guard.MAX_LOST == 3
    guard.ROOT_TASK.Request = "project.requests:Own"
    guard.install(3)
    assert guard.ROOT_TASK.Request == "project.requests:Own"
