"""Poison-task guard: a task whose pool child dies again and again is failed, not requeued forever.

Loaded by vpsstack_celery_app.py when worker_poison_max_lost > 0 (docs/worker.md, "Poison tasks").

With task_acks_late and task_reject_on_worker_lost (both enforced by the worker role), Celery 5.7.0 requeues a
task whose prefork child died (kernel OOM kill, segfault, os._exit) every time: celery/worker/request.py
Request.on_failure calls reject(requeue=True) when reject_on_worker_lost and the error is a WorkerLostError, and
nothing counts the deliveries. This Request subclass counts the losses of each task id in the broker's Redis
(vpsstack:lost:<task id>) and, at the limit, lets Celery's own failure path run instead of the requeue: the
message is acknowledged, the result backend gets FAILURE (WorkerLostError), task_failure fires and a task-failed
event goes out. When the count cannot be taken, Celery requeues as it always does.

A count has no TTL: under volatile-lru Redis evicts only keys that have one, and an evicted count would let a
poison task start over. It is deleted when the task succeeds; a task given up keeps it.
"""
import contextlib
import logging

from billiard.einfo import ExceptionWithTraceback
from celery import signals
from celery.app import task as celery_task
from celery.exceptions import WorkerLostError
from celery.worker.request import Request

KEY = "vpsstack:lost:{}"
# The task attributes that make Celery's on_failure send a lost worker's task again (5.7.0: requeue, or retry).
REQUEUE_FLAGS = ("reject_on_worker_lost", "retry_on_worker_lost")
CELERY_DEFAULT_REQUEST = "celery.worker.request:Request"

# worker_poison_max_lost, set by install().
MAX_LOST = 0

logger = logging.getLogger(__name__)


def lost_worker(exc, cancelled):
    """Whether Celery's on_failure handles exc as a lost worker: a WorkerLostError, or (billiard >= 4.3 reports
    the exit before the child is gone) SystemExit/KeyboardInterrupt of a child nobody cancelled or revoked."""
    if isinstance(exc, ExceptionWithTraceback):
        exc = exc.exc
    if isinstance(exc, WorkerLostError):
        return True
    return isinstance(exc, (SystemExit, KeyboardInterrupt)) and not cancelled


def requeues(task):
    """Whether Celery would send this task's message again after a lost worker (acks_late only)."""
    return bool(task.acks_late and any(getattr(task, name, False) for name in REQUEUE_FLAGS))


def give_up(count, max_lost):
    """The decision: fail the task once it lost its child max_lost times. No count (Redis failed): requeue."""
    return max_lost > 0 and count is not None and count >= max_lost


def count_loss(channel, task_id):
    """INCR the task's counter on the broker's Redis and return it. Through the message's own kombu channel:
    the connection settings (URL, password, TLS, timeouts) and the synchronous client kombu acks with
    (kombu 5.7 transport/redis.py Channel.conn_or_acquire)."""
    with channel.conn_or_acquire() as client:
        return int(client.incr(KEY.format(task_id)))


def forget_losses(channel, task_id):
    """DEL the task's counter, through the same channel."""
    with channel.conn_or_acquire() as client:
        client.delete(KEY.format(task_id))


@contextlib.contextmanager
def no_requeue(task):
    """Both requeue flags off for one on_failure call, then back: Celery then acknowledges, stores FAILURE and
    sends task_failure itself. The task object is shared by all its requests; the prefork parent runs these
    callbacks one at a time in its event loop, and the flags are restored before the next one."""
    saved = {name: task.__dict__[name] for name in REQUEUE_FLAGS if name in task.__dict__}
    for name in REQUEUE_FLAGS:
        setattr(task, name, False)
    try:
        yield
    finally:
        for name in REQUEUE_FLAGS:
            if name in saved:
                setattr(task, name, saved[name])
            else:
                delattr(task, name)


class GuardRequest(Request):
    """Celery's Request, with a limit on how often a lost worker child sends the same task again."""

    # Set when this message ends in a failure (a retry or a give-up included) or a hard time limit. Any other
    # acknowledgement ends the task for good: a success (or a revoke, after which the count has no use either).
    _not_succeeded = False

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        self._not_succeeded = True
        task = self.task
        if (MAX_LOST > 0 and requeues(task)
                and lost_worker(exc_info.exception, self._already_cancelled or self._already_revoked)):
            count = self._count_loss()
            if give_up(count, MAX_LOST):
                logger.error(
                    "Poison task %s[%s]: its worker child was lost %d times (worker_poison_max_lost=%d): "
                    "not requeued again, acknowledged and marked failed (WorkerLostError)",
                    self.name, self.id, count, MAX_LOST)
                with no_requeue(task):
                    return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
            if count is not None:
                logger.warning(
                    "Task %s[%s] lost its worker child (%d of worker_poison_max_lost=%d): requeued",
                    self.name, self.id, count, MAX_LOST)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def on_timeout(self, soft, timeout):
        if not soft:
            self._not_succeeded = True
        return super().on_timeout(soft, timeout)

    def acknowledge(self):
        """Celery's acknowledgement, then, after a success, the count's DEL. Here rather than in on_success:
        the request class Celery generates per task (celery/worker/request.py create_request_cls) replaces
        on_success without calling it, but acknowledges through this method. Only a task the guard counts and
        that came round again (kombu marks a requeued or restored message redelivered; a retry has retries > 0)
        can have a count: every other task costs no round trip."""
        first = not self.acknowledged
        super().acknowledge()
        if (first and not self._not_succeeded and requeues(self.task)
                and (self.delivery_info.get("redelivered") or self.request_dict.get("retries"))):
            try:
                forget_losses(self.message.channel, self.id)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                # The task is done and acknowledged; the count only stays in Redis.
                logger.warning("Poison-task guard cannot delete the lost-worker count of %s[%s] (%r)",
                               self.name, self.id, exc)

    def _count_loss(self):
        try:
            return count_loss(self.message.channel, self.id)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # Never lose the task over the guard: without a count Celery requeues it as it always does.
            logger.warning("Poison-task guard cannot count the lost worker of %s[%s] (%r): requeued",
                           self.name, self.id, exc)
            return None


def install(max_lost):
    """Make GuardRequest the Request of every task class that does not set its own. Celery resolves the class
    per task when the worker starts (celery/worker/strategy.py: symbol_by_name(task.Request)), and the root
    Task class is the base of app.Task (@app.task, @shared_task) and of a project's own base class alike."""
    global MAX_LOST  # pylint: disable=global-statement
    MAX_LOST = int(max_lost)
    if MAX_LOST > 0 and celery_task.Task.Request == CELERY_DEFAULT_REQUEST:
        celery_task.Task.Request = GuardRequest
    # Said once the worker has set up its logging (an INFO line at import time goes nowhere); beat and the
    # celery CLI import this module too and say nothing.
    signals.celeryd_after_setup.connect(log_installed, weak=False, dispatch_uid="vpsstack_poison_guard")


def log_installed(**_kwargs):
    """One line in the worker's log: is the guard on, and if not, why."""
    current = celery_task.Task.Request
    if current is GuardRequest:
        logger.info("Poison-task guard installed: a task whose worker child is lost %d times is failed, not "
                    "requeued again (worker_poison_max_lost)", MAX_LOST)
    elif MAX_LOST <= 0:
        logger.info("Poison-task guard not installed: worker_poison_max_lost=0, Celery requeues a task every time "
                    "its worker child is lost")
    else:
        logger.warning("Poison-task guard not installed: celery.app.task.Task.Request is %r, not Celery's "
                       "default: a task whose worker child is lost is requeued every time", current)
