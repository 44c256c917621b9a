"""Client for the deploy tests; prints JSON. Run as the worker user with the programs' environment:

    python -m relapp.client version                       -> the VERSION of the code that ran the task
    python -m relapp.client stream KEY INTERVAL SECONDS STOPFILE OUT
        -> one slow task every INTERVAL s until STOPFILE exists (at most 600 s), waits, writes a report to OUT
"""
import json
import os
import sys
import time

from vpsstack_celery_app import app

WAIT = 300


def version():
    return app.signature("relapp.tasks.version").delay().get(timeout=60)


def stream(key, interval, seconds, stopfile, out):
    """Send tasks at a steady rate until told to stop, then wait (bounded) for every result: lost = sent but
    never completed. A steady stream keeps tasks running and queued through whatever restarts meanwhile."""
    client = app.backend.client
    client.delete("relapp:runs:%s" % key)
    started = time.time()
    results = []
    while not os.path.exists(stopfile) and time.time() - started < 600:
        results.append(app.signature("relapp.tasks.slow", args=(key, str(len(results)), seconds)).delay())
        time.sleep(float(interval))
    done = {}
    deadline = time.monotonic() + WAIT
    for result in results:
        try:
            done[result.id] = result.get(timeout=max(1.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - a timeout means lost; the report says how many
            pass
    runs = {k: int(v) for k, v in client.hgetall("relapp:runs:%s" % key).items()}
    finished = sorted(r["done"] for r in done.values())
    gaps = [b - a for a, b in zip(finished, finished[1:])]
    versions = {}
    for r in done.values():
        versions[r["version"]] = versions.get(r["version"], 0) + 1
    report = {
        "sent": len(results),
        "completed": len(done),
        "lost": len(results) - len(done),
        "duplicates": sum(c - 1 for c in runs.values() if c > 1),
        "versions": versions,
        "longest_gap_s": round(max(gaps, default=0.0), 2),
        "elapsed_s": round(time.time() - started, 2),
    }
    with open(out, "w") as handle:
        json.dump(report, handle)
    return report


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "version":
        print(json.dumps(version()))
    elif command == "stream":
        print(json.dumps(stream(*args)))
    else:
        sys.exit("unknown command %s" % command)
