"""Small client for tests and demos; prints JSON. Run with the worker's venv and environment:

    python -m demo_app.client add 2 3
    python -m demo_app.client send-record KEY N SECONDS      -> list of task ids
    python -m demo_app.client send-record-on QUEUE KEY N SECONDS -> the same, to QUEUE (e.g. a gevent group's)
    python -m demo_app.client send-record-for QUEUE KEY RATE SECONDS DURATION [STOP_FILE]
                                                             -> RATE tasks/s for DURATION s (or until STOP_FILE
                                                                exists): {"ids": [...], "failed": sends refused}
    python -m demo_app.client count-record KEY IDS_JSON [TIMEOUT] -> started/completed/duplicates/lost
    python -m demo_app.client leak MB [QUEUE]                -> pid of the child that ran it
    python -m demo_app.client stats NODE                     -> pool pids and max-concurrency of a worker
    python -m demo_app.client send-trace KEY N MIN_S MAX_S QUEUE [COUNTDOWN] [LEAK_MB] -> number sent
    python -m demo_app.client report-trace KEY [TIMEOUT] [SETTLE] -> lost, duplicates, longest delay
"""
import json
import random
import sys
import time

from demo_app.tasks import add, app, leak, record, record_store, trace

TIMEOUT = 60


def count_record(key, ids, timeout=TIMEOUT):
    """Wait (bounded) until every id is done, then count: lost = sent but never completed."""
    store = record_store()
    deadline = time.monotonic() + float(timeout)
    while True:
        done = store.hgetall("done:%s" % key)
        if all(i in done for i in ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    started = store.hgetall("started:%s" % key)
    return {
        "sent": len(ids),
        "started": sum(1 for i in ids if i in started),
        "completed": sum(1 for i in ids if i in done),
        "executions": sum(int(done.get(i, 0)) for i in ids),
        "duplicates": sum(int(done[i]) - 1 for i in ids if i in done),
        "restarted_runs": sum(int(started.get(i, 0)) - int(done.get(i, 0)) for i in ids if i in done),
        "lost": sorted(i for i in ids if i not in done),
    }


def send_trace(key, n, min_s, max_s, queue, countdown=0, leak_mb=0):
    """Send n trace tasks of random length (seeded by key: reruns send the same work) and keep each id's send
    time in sent:<key>, so the report needs no id list and measures enqueue-to-done delay."""
    store = record_store()
    store.delete(*("%s:%s" % (part, key) for part in ("sent", "started", "done", "done_at")))
    rng = random.Random(key)
    sent = {}
    for _task in range(int(n)):
        seconds = round(rng.uniform(float(min_s), float(max_s)), 3)
        sent_at = time.time()
        result = trace.apply_async((key, seconds, int(leak_mb)), queue=queue, countdown=float(countdown) or None)
        sent[result.id] = repr(sent_at)
        if len(sent) >= 500:
            store.hset("sent:%s" % key, mapping=sent)
            sent = {}
    if sent:
        store.hset("sent:%s" % key, mapping=sent)
    return int(n)


def report_trace(key, timeout=TIMEOUT, settle=0):
    """Wait (bounded) until every sent task is done, then `settle` seconds more (late redeliveries show up as
    duplicates), and count. lost = sent, never completed; duplicates = started or completed more than once."""
    store = record_store()
    sent = {i: float(t) for i, t in store.hgetall("sent:%s" % key).items()}
    deadline = time.monotonic() + float(timeout)
    while store.hlen("done:%s" % key) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(float(settle))
    started, done = store.hgetall("started:%s" % key), store.hgetall("done:%s" % key)
    done_at = {i: float(t) for i, t in store.hgetall("done_at:%s" % key).items()}
    delays = [done_at[i] - sent[i] for i in sent if i in done_at]
    return {
        "sent": len(sent),
        "completed": sum(1 for i in sent if i in done),
        "lost": sorted(i for i in sent if i not in done),
        "started_twice": sum(1 for i in sent if int(started.get(i, 0)) > 1),
        "completed_twice": sum(1 for i in sent if int(done.get(i, 0)) > 1),
        "longest_delay_s": round(max(delays), 2) if delays else None,
    }


def send_record_for(queue, key, rate, seconds, duration, stop_file=None):
    """Steady load across a fault: a send the broker refuses (after kombu's publish retries) is counted as failed,
    not as sent, so `lost` in count-record only counts tasks the broker accepted."""
    import os

    record_store().delete("started:%s" % key, "done:%s" % key)
    ids, failed = [], 0
    interval = 1.0 / float(rate)
    end = time.monotonic() + float(duration)
    next_at = time.monotonic()
    while time.monotonic() < end and not (stop_file and os.path.exists(stop_file)):
        try:
            ids.append(record.apply_async((key, float(seconds)), queue=queue).id)
        except Exception:  # noqa: BLE001 - any refused publish counts as not sent
            failed += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    return {"ids": ids, "failed": failed}


def stats(node):
    reply = app.control.inspect(destination=[node], timeout=5).stats() or {}
    pool = reply.get(node, {}).get("pool", {})
    return {"max-concurrency": pool.get("max-concurrency"), "processes": pool.get("processes", []),
            "implementation": pool.get("implementation")}


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "add":
        out = add.delay(int(args[0]), int(args[1])).get(timeout=TIMEOUT)
    elif cmd == "send-record":
        key, n, seconds = args[0], int(args[1]), float(args[2])
        record_store().delete("started:%s" % key, "done:%s" % key)
        out = [record.delay(key, seconds).id for _task in range(n)]
    elif cmd == "send-record-on":
        queue, key, n, seconds = args[0], args[1], int(args[2]), float(args[3])
        record_store().delete("started:%s" % key, "done:%s" % key)
        out = [record.apply_async((key, seconds), queue=queue).id for _task in range(n)]
    elif cmd == "send-record-for":
        out = send_record_for(*args)
    elif cmd == "count-record":
        out = count_record(args[0], json.loads(args[1]), *(args[2:3]))
    elif cmd == "started-record":
        out = record_store().hlen("started:%s" % args[0])
    elif cmd == "leak":
        queue = args[1] if len(args) > 1 else "celery"
        out = leak.apply_async((int(args[0]),), queue=queue).get(timeout=TIMEOUT)
    elif cmd == "add-on":
        out = add.apply_async((int(args[1]), int(args[2])), queue=args[0]).get(timeout=TIMEOUT)
    elif cmd == "stats":
        out = stats(args[0])
    elif cmd == "send-trace":
        out = send_trace(*args)
    elif cmd == "report-trace":
        out = report_trace(*args)
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
