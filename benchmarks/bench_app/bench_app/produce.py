"""Producer of the benchmark, run inside the stack's container with the workers' venv and settings.

    python -m bench_app.produce RUN WORKLOAD N [--sleep-ms 50] [--rounds R] [--stall 60]

Clears the done list, publishes N tasks as fast as one process can (a burst), waits until all are done (or
nothing finished for --stall seconds), prints one JSON line: throughput, latency percentiles, lost, duplicates.
Progress goes to stderr once a second. The benchmark splits it in two (--publish-only while the workers are held
with SIGSTOP, then --since RELEASE_TIME): the queue is full before the workers start, and the producer's
publishing does not compete with them for the container's CPU.
"""
import argparse
import json
import sys
import time

from bench_app.tasks import DONE_KEY, burn, noop, record_store, sleep_ms


def percentile(sorted_values, pct):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(pct / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def signature(workload, run, index, args):
    if workload == "io":
        return sleep_ms, (run, index, args.sleep_ms)
    if workload == "cpu":
        return burn, (run, index, args.rounds)
    if workload == "mixed":
        # Alternating halves: the I/O tasks wait while the CPU tasks run.
        return (sleep_ms, (run, index, args.sleep_ms)) if index % 2 else (burn, (run, index, args.rounds))
    return noop, (run, index)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("workload", choices=["io", "cpu", "mixed", "burst"])
    parser.add_argument("n", type=int)
    parser.add_argument("--sleep-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=10000)
    parser.add_argument("--stall", type=float, default=60.0, help="give up after this long without progress (s)")
    parser.add_argument("--publish-only", action="store_true",
                        help="publish and exit (the controller holds the workers stopped meanwhile)")
    parser.add_argument("--since", type=float, default=None,
                        help="only wait: the N tasks were queued before, the workers released at this time()")
    args = parser.parse_args()

    store = record_store()
    if args.since is not None:
        return wait(store, args, [args.since] * args.n)
    store.delete(DONE_KEY)
    enqueued = []
    # The controller reads the container's CPU counter here: the producer's start-up is not a task's cost.
    sys.stderr.write("start\n")
    sys.stderr.flush()
    for index in range(args.n):
        task, task_args = signature(args.workload, args.run, index, args)
        enqueued.append(time.time())
        task.apply_async(task_args)
    published = time.time()
    if args.publish_only:
        print(json.dumps({"publish_s": published - enqueued[0]}))
        return None
    return wait(store, args, enqueued, published - enqueued[0])


def wait(store, args, enqueued, publish_s=None):
    """Until all N are done (or no progress for --stall s); print the JSON line."""
    count, last_count, last_change, last_print = 0, -1, time.time(), 0.0
    while True:
        count = store.llen(DONE_KEY)
        now = time.time()
        if count != last_count:
            last_count, last_change = count, now
        if now - last_print >= 1.0:
            sys.stderr.write("%d/%d done %.0f s\n" % (count, args.n, now - enqueued[0]))
            sys.stderr.flush()
            last_print = now
        if count >= args.n or now - last_change > args.stall:
            break
        time.sleep(0.1)

    finished, seen, duplicates = {}, set(), 0
    for row in store.lrange(DONE_KEY, 0, -1):
        run, index, stamp = row.decode().split()
        if run != args.run:
            continue
        index = int(index)
        if index in seen:
            duplicates += 1
            continue
        seen.add(index)
        finished[index] = float(stamp)
    latencies = sorted(finished[i] - enqueued[i] for i in finished)
    span = (max(finished.values()) - enqueued[0]) if finished else None
    print(json.dumps({
        "n": args.n, "done": len(finished), "lost": args.n - len(finished), "duplicates": duplicates,
        "publish_s": publish_s, "span_s": span,
        "tasks_per_s": len(finished) / span if span else 0.0,
        "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
        "p95_ms": 1000 * percentile(latencies, 95) if latencies else None,
    }))


if __name__ == "__main__":
    main()
