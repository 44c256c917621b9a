"""The poison-task guard's decisions (roles/worker/files/vpsstack_poison_guard.py), without a broker or Celery.

The controller's venv has no Celery, so the few Celery names the module imports are stand-ins here: a base
Request whose on_failure records the requeue flags it sees (what Celery 5.7.0 decides on: reject(requeue=True)
while reject_on_worker_lost is set, a retry and an acknowledgement while retry_on_worker_lost is, acknowledge +
FAILURE otherwise), and whose succeed() does what the on_success of Celery's generated request class does
(celery/worker/request.py create_request_cls: acknowledge, no super() call). That Celery really acts on them is
proven live by molecule/deploy/tests/test_poison.py.
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
    acknowledged = False

    def __init__(self, task, channel, task_id="id-1", name="app.poison", redelivered=False, retries=0):
        self._task = task
        self.message = types.SimpleNamespace(channel=channel)
        self.id = task_id
        self.name = name
        self.delivery_info = {"redelivered": redelivered}
        self.request_dict = {"retries": retries}
        self.seen = []

    @property
    def task(self):
        return self._task

    def acknowledge(self):
        if not self.acknowledged:
            self.message.channel.acks.append(self.id)
            self.acknowledged = True

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        if self.task.reject_on_worker_lost:
            self.acknowledged = True  # reject(requeue=True)
            self.seen.append("requeue")
        elif self.task.retry_on_worker_lost:
            self.acknowledge()  # a retry sent (the same task id), this message acknowledged
            self.seen.append("requeue")
        else:
            self.acknowledge()
            self.seen.append("ack+failure")
        return self.seen[-1]

    def succeed(self):
        if self.task.acks_late:
            self.acknowledge()
        return "success"


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
        "celery.signals": types.ModuleType("celery.signals"),
        "celery.worker": types.ModuleType("celery.worker"),
        "celery.worker.request": types.ModuleType("celery.worker.request"),
    }
    stubs["billiard.einfo"].ExceptionWithTraceback = ExceptionWithTraceback
    stubs["celery.exceptions"].WorkerLostError = WorkerLostError
    stubs["celery.worker.request"].Request = BaseRequest
    root = type("Task", (), {"Request": DEFAULT_REQUEST})
    stubs["celery.app.task"].Task = root
    stubs["celery.app"].task = stubs["celery.app.task"]
    stubs["celery.signals"].celeryd_after_setup = Signal()
    stubs["celery"].signals = stubs["celery.signals"]
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("vpsstack_poison_guard", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT_TASK = root
    module.SIGNALS = stubs["celery.signals"]
    return module


class Channel:
    """kombu's Redis channel as the guard uses it: conn_or_acquire() -> a client (INCR, DEL, EXPIRE, SETEX, and
    a MULTI/EXEC pipeline). Every command sent is in .commands, every message acknowledged in .acks."""

    def __init__(self, fail=False):
        self.counts = {}
        self.ttls = {}
        self.commands = []
        self.acks = []
        self.fail = fail

    @contextlib.contextmanager
    def conn_or_acquire(self):
        if self.fail:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        yield self

    def pipeline(self):
        return Pipeline(self)

    def incr(self, key):
        self.commands.append(("incr", key))
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def delete(self, *keys):
        self.commands.append(("delete", *keys))
        for key in keys:
            self.counts.pop(key, None)
            self.ttls.pop(key, None)

    def expire(self, key, seconds):
        self.commands.append(("expire", key, seconds))
        self.ttls[key] = seconds

    def setex(self, key, seconds, value):
        self.commands.append(("setex", key, seconds, value))
        self.counts[key], self.ttls[key] = int(value), seconds


class Pipeline:
    def __init__(self, channel):
        self.channel = channel
        self.commands = []

    def incr(self, key):
        self.commands.append(("incr", key))

    def expire(self, key, seconds):
        self.commands.append(("expire", key, seconds))

    def execute(self):
        return [getattr(self.channel, command[0])(*command[1:]) for command in self.commands]


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


def test_counts_have_no_ttl(guard):
    # Under volatile-lru Redis evicts keys that have a TTL: an evicted count would let a poison task run again
    # and again. Counts have none; they are deleted when the task succeeds.
    guard.install(3)
    channel = Channel()
    for redelivered in (False, True, True):
        guard.GuardRequest(Task(), channel, task_id="t-1", redelivered=redelivered).on_failure(lost())
    assert channel.counts == {"vpsstack:lost:t-1": 3}
    assert channel.ttls == {} and not [c for c in channel.commands if c[0] in ("expire", "setex")], channel.commands


def test_a_count_is_deleted_when_the_task_succeeds(guard):
    guard.install(3)
    channel = Channel()
    assert guard.GuardRequest(Task(), channel, task_id="t-2").on_failure(lost()) == "requeue"
    assert channel.counts == {"vpsstack:lost:t-2": 1}
    # The requeued message comes back marked redelivered (kombu's redis transport, _do_restore_message).
    assert guard.GuardRequest(Task(), channel, task_id="t-2", redelivered=True).succeed() == "success"
    assert channel.counts == {} and channel.acks == ["t-2"]
    assert channel.commands[-1] == ("delete", "vpsstack:lost:t-2")


def test_a_first_delivery_that_succeeds_sends_nothing_to_redis(guard):
    # Only a task that came round again (redelivered, or a retry) can have a count: no DEL for every task.
    guard.install(3)
    channel = Channel()
    guard.GuardRequest(Task(), channel, task_id="t-3").succeed()
    assert channel.commands == [] and channel.acks == ["t-3"]


def test_a_retry_after_a_lost_child_keeps_the_count(guard):
    # retry_on_worker_lost: Celery acknowledges the lost message after sending a retry with the same id. That
    # acknowledgement is no success: the count goes on, and the retry's success deletes it.
    guard.install(3)
    task, channel = Task(), Channel()
    task.reject_on_worker_lost, task.retry_on_worker_lost = False, True
    assert guard.GuardRequest(task, channel, task_id="t-4").on_failure(lost()) == "requeue"
    assert guard.GuardRequest(task, channel, task_id="t-4", retries=1).on_failure(lost()) == "requeue"
    assert channel.counts == {"vpsstack:lost:t-4": 2} and channel.acks == ["t-4", "t-4"]
    guard.GuardRequest(task, channel, task_id="t-4", retries=2).succeed()
    assert channel.counts == {}


def test_a_given_up_task_keeps_its_count(guard):
    # Acknowledged and marked failed: no success. The count stays, so the same task id sent again fails at its
    # first lost child.
    guard.install(2)
    channel = Channel()
    for redelivered in (False, True):
        guard.GuardRequest(Task(), channel, task_id="t-5", redelivered=redelivered).on_failure(lost())
    assert channel.counts == {"vpsstack:lost:t-5": 2} and channel.acks == ["t-5"]


def test_a_count_that_cannot_be_deleted_is_logged(guard, caplog):
    guard.install(3)
    caplog.set_level(logging.WARNING, logger="vpsstack_poison_guard")
    request = guard.GuardRequest(Task(), Channel(fail=True), task_id="t-6", redelivered=True)
    assert request.succeed() == "success" and request.acknowledged
    assert "cannot delete the lost-worker count of app.poison[t-6]" in caplog.text


class Signal:
    """Stand-in for a celery.utils.dispatch Signal: one receiver per dispatch_uid."""

    def __init__(self):
        self.receivers = {}

    def connect(self, receiver, sender=None, weak=True, dispatch_uid=None):
        self.receivers[dispatch_uid or id(receiver)] = receiver

    def send(self, sender, **named):
        return [(r, r(signal=self, sender=sender, **named)) for r in list(self.receivers.values())]


@pytest.mark.parametrize("max_lost, own_request, level, text", [
    (3, False, logging.INFO, "Poison-task guard installed: a task whose worker child is lost 3 times is failed"),
    (0, False, logging.INFO, "Poison-task guard not installed: worker_poison_max_lost=0"),
    (3, True, logging.WARNING, "Poison-task guard not installed: celery.app.task.Task.Request is "
                               "'project.requests:Own'"),
])
def test_the_worker_logs_once_whether_the_guard_is_installed(guard, caplog, max_lost, own_request, level, text):
    caplog.set_level(logging.INFO, logger="vpsstack_poison_guard")
    if own_request:
        guard.ROOT_TASK.Request = "project.requests:Own"
    guard.install(max_lost)
    guard.install(max_lost)  # twice: still one line
    assert caplog.records == [], "nothing before the worker has set up its logging"
    guard.SIGNALS.celeryd_after_setup.send(sender="default@w1", instance=None, conf=None)
    assert [(r.levelno, r.getMessage()[:len(text)]) for r in caplog.records] == [(level, text)]
