"""Small client for tests and demos; prints JSON. Run with the worker's venv and environment:

    python -m demo_app.client add 2 3
    python -m demo_app.client send-record KEY N SECONDS      -> list of task ids
    python -m demo_app.client count-record KEY IDS_JSON [TIMEOUT] -> started/completed/duplicates/lost
    python -m demo_app.client leak MB [QUEUE]                -> pid of the child that ran it
    python -m demo_app.client stats NODE                     -> pool pids and max-concurrency of a worker
"""
import json
import sys
import time

from demo_app.tasks import add, app, leak, record, record_store

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
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
