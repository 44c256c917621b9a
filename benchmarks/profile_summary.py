"""Where a Celery worker's samples go: a py-spy raw profile summed into the mechanisms issue 12 §2 names.

    py-spy record -p PARENT_PID --subprocesses -r 100 -d 30 -f raw -o prof.txt   # on the host, as root
    python benchmarks/profile_summary.py prof.txt [more.txt ...]

Each line of the raw format is "process;frame;frame;... COUNT". A sample counts for the first category (in the
order below) whose frame pattern appears in its stack, separately for the pool parent and its children; samples
whose innermost frame waits for work (IDLE_LEAVES) are counted apart. A blocked or runnable-but-waiting process
is sampled too (py-spy), so on a busy host the shares mix CPU and waiting.
"""
import collections
import sys

# (category, substrings of a frame); the first match wins, so the specific ones come first.
CATEGORIES = [
    ("task body (burn_cpu / sleep)", ("burn_cpu (", "time.sleep", "sleep_ms (")),
    ("task's own done-record (Redis RPUSH)", ("done (bench_app",)),
    ("result backend store", ("store_result", "mark_as_done", "_store_result")),
    ("max-memory-per-child check", ("mem_rss",)),
    ("heartbeat", ("Heart._send", "heartbeat")),
    ("gossip / mingle / events", ("Gossip", "gossip", "Mingle", "EventDispatcher", "event_dispatcher")),
    ("time-limit timers", ("on_timeout_set", "on_timeout_cancel", "_on_hard_timeout", "_on_soft_timeout")),
    ("logging", ("logging/__init__.py", "Logger.", "Handler.", "StreamHandler")),
    ("ack / reject", ("basic_ack", "Message.ack", ".ack (", "acknowledge", "basic_reject")),
    ("unacked bookkeeping (QoS append)", ("QoS.append", "restore_visible")),
    ("fetch (BRPOP, parse)", ("_brpop_read", "_brpop_start", "handle_event", "MultiChannelPoller", "_receive")),
    ("request / strategy", ("task_message_handler", "Request.", "on_task_received", "create_request_cls")),
    ("pool dispatch / results", ("AsynPool", "ResultHandler", "apply_async", "on_job_ready", "send_job",
                                 "_write_job", "on_result_readable", "_recv_message")),
    ("event loop (poll)", ("Hub.create_loop", "poll (", "_poll")),
]


# Leaves where a process waits for work: the child for a job on the pool pipe, the parent in epoll. Waiting for a
# Redis reply is not idle: it counts for the category that sent the command (a synchronous round trip).
IDLE_LEAVES = ("Connection._recv (billiard", "_epoll.poll (", "Connection._poll (billiard")


def summarize(paths):
    totals = collections.defaultdict(collections.Counter)
    roles = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                stack, _sep, count = line.rstrip("\n").rpartition(" ")
                if not stack:
                    continue
                leaf = stack.rsplit(";", 1)[-1]
                process = stack.split(";", 1)[0]
                pid = process.split(":", 1)[0]
                # The parent runs the consumer's event loop; children run the pool's worker loop.
                if "asynloop" in stack or "Evloop" in stack:
                    roles[pid] = "parent"
                role = "child" if ("billiard/pool.py" in stack or "workloop" in stack) else roles.get(pid, "parent")
                if any(p in leaf for p in IDLE_LEAVES):
                    category = "idle (waiting for work)"
                else:
                    category = next((name for name, pats in CATEGORIES if any(p in stack for p in pats)), "other")
                totals[role][category] += int(count)
    return totals


def main(argv):
    totals = summarize(argv)
    for role in ("parent", "child"):
        counter = totals.get(role)
        if not counter:
            continue
        idle = counter.pop("idle (waiting for work)", 0)
        whole = sum(counter.values())
        print("\n%s: %d busy samples (+ %d idle)" % (role, whole, idle))
        print("| where | share of busy |\n|---|---:|")
        for name, count in counter.most_common():
            print("| %s | %.1f %% |" % (name, 100.0 * count / whole))


if __name__ == "__main__":
    main(sys.argv[1:])
