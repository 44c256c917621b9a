"""Drop cancelled time-limit timers from a prefork worker's event loop, so its parent does not grow with the rate.

Loaded by vpsstack_celery_app.py for every program (docs/worker.md, "Time limits and the parent's memory").

The prefork pool arms one timer per task for its soft (or hard) time limit and cancels it when the task ends
(celery 5.7.0 concurrency/asynpool.py, on_timeout_set / _discard_tref). kombu 5.7.0's Timer.cancel only flags
the entry: it stays in the heap until its due time, when Timer.__iter__ pops and skips it
(kombu/asynchronous/timer.py). With the role's 270 s soft limit the parent holds rate x 270 s dead entries.
Measured (celery 5.7.0, prefork -c 2, 30 000 tiny tasks at ~270/s): the parent grew 51 -> 68 MiB (0.58 KiB per
task) and the children forked from it after each recycle inherited the growth (42 -> 60 MiB); without time
limits all stayed flat. Upstream reports of the same growth: celery #1129, #1427, #5200.

Every INTERVAL_S seconds the step below rebuilds the heap without the cancelled entries. It runs as a timer of
the same loop, so nothing else touches the heap meanwhile; live timers (time limits of running tasks,
heartbeats, the broker's restore cycle) are kept with their due times. Pools without the loop (gevent,
eventlet, threads, solo) have no such heap: the step does nothing there.

drop_cancelled reads kombu's private heap (Timer._queue, entry.canceled): on a kombu other than TESTED_VERSIONS the
step is not added and one warning line says so (docs/worker.md, "Patches and versions").
"""
import heapq

from vpsstack_versions import skipped

# The versions this patch was read against and measured with; the worker role's pip constraints pin the same.
TESTED_VERSIONS = {"kombu": "5.7.0"}

# 5 s: at ~300 tasks/s the parent then holds about 1500 dead entries (< 1 MiB); 30 s still let it grow 5 MiB
# (measured as above). One pass over that heap costs well under a millisecond.
INTERVAL_S = 5.0


def drop_cancelled(timer):
    """Remove the cancelled entries from a kombu Timer's heap in place; return how many were removed.

    In place, because Timer.__iter__ (the hub's scheduler generator) holds a reference to the list."""
    queue = timer._queue  # pylint: disable=protected-access
    live = [item for item in queue if not item.entry.canceled]
    dropped = len(queue) - len(live)
    if dropped:
        heapq.heapify(live)
        queue[:] = live
    return dropped


def install(app, interval_s=INTERVAL_S):
    """Add the step to the app's worker blueprint (read when `celery worker` builds the worker); None when skipped.

    Skipped, with one line in the program's log, on other library versions (vpsstack_versions.py)."""
    if skipped(__name__, TESTED_VERSIONS):
        return None
    from celery import bootsteps  # pylint: disable=import-outside-toplevel

    class DropCancelledTimers(bootsteps.StartStopStep):
        """Worker step: a repeating timer on the worker's hub that compacts that hub's timer heap."""

        requires = {"celery.worker.components:Hub"}

        def __init__(self, parent, **kwargs):
            super().__init__(parent, **kwargs)
            self.tref = None

        def start(self, parent):
            hub = getattr(parent, "hub", None)
            if hub is not None:
                self.tref = hub.call_repeatedly(interval_s, drop_cancelled, hub.timer)

        def stop(self, parent):
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

    app.steps["worker"].add(DropCancelledTimers)
    return DropCancelledTimers
