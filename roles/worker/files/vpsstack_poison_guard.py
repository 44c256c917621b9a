"""Poison-task guard: a task whose pool child dies again and again is failed, not requeued forever.

Loaded by vpsstack_celery_app.py when worker_poison_max_lost > 0 (docs/worker.md, "Poison tasks").

With task_acks_late and task_reject_on_worker_lost (both enforced by the worker role), Celery 5.7.0 requeues a
task whose prefork child died (kernel OOM kill, segfault, os._exit) every time: celery/worker/request.py
Request.on_failure calls reject(requeue=True) when reject_on_worker_lost and the error is a WorkerLostError, and
nothing counts the deliveries. This Request subclass counts the losses of each task id in the broker's Redis
(vpsstack:lost:<task id>, kept a day) and, at the limit, lets Celery's own failure path run instead of the
requeue: the message is acknowledged, the result backend gets FAILURE (WorkerLostError), task_failure fires and
a task-failed event goes out. When the count cannot be taken, Celery requeues as it always does.
"""
import contextlib
import logging

from billiard.einfo import ExceptionWithTraceback
from celery.app import task as celery_task
from celery.exceptions import WorkerLostError
from celery.worker.request import Request

KEY = "vpsstack:lost:{}"
KEY_TTL_S = 86400
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
    (kombu 5.7 transport/redis.py Channel.conn_or_acquire). MULTI/EXEC: the counter never exists without TTL."""
    key = KEY.format(task_id)
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, KEY_TTL_S)
        count = pipe.execute()[0]
    return int(count)


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

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
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
