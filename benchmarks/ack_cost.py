"""CPU of kombu's per-message bookkeeping (the unacked record, then the ack), with kombu's own Redis client per
command and with vpsstack_redis_clients.py's one client per channel, alternating (docs/worker.md, "One Redis client
per channel").

Run on a converged worker host (or a `make bench --keep` container), as root, with the workers' venv:

    set -a; . /etc/celery/producer.env; set +a
    /opt/celery/venv/bin/python ack_cost.py [--messages 3000] [--runs 3]

Each run is a fresh process (the patch cannot be taken out of a process once installed). Uses the broker of
CELERY_BROKER_URL: the keys are kombu's unacked hash and index, each entry removed again by its ack.
"""
import argparse
import os
import subprocess
import sys
import time
import types

CONFIG_DIR = "/etc/celery"


def measure(messages):
    """CPU and wall time per message of QoS.append + QoS.ack, after 200 unmeasured ones."""
    from kombu import Connection  # pylint: disable=import-outside-toplevel

    with Connection(os.environ["CELERY_BROKER_URL"]) as connection:
        qos = connection.channel().qos
        message = types.SimpleNamespace(_raw={"body": "x" * 800, "headers": {}},
                                        delivery_info={"exchange": "", "routing_key": "vpsstack-ack-cost"})
        for tag in range(200):
            qos.append(message, "warm-%d" % tag)
            qos.ack("warm-%d" % tag)
        wall, cpu = time.perf_counter(), time.process_time()
        for tag in range(messages):
            qos.append(message, "ack-cost-%d" % tag)
            qos.ack("ack-cost-%d" % tag)
        return (time.perf_counter() - wall) / messages * 1e6, (time.process_time() - cpu) / messages * 1e6


def one_run(mode, messages):
    if mode == "per-channel":
        sys.path.insert(0, CONFIG_DIR)
        import vpsstack_redis_clients  # pylint: disable=import-outside-toplevel

        if not vpsstack_redis_clients.install():
            raise SystemExit("vpsstack_redis_clients did not install (another kombu or redis-py)")
    wall, cpu = measure(messages)
    print("%-12s %6.0f µs CPU, %6.0f µs wall per message" % (mode, cpu, wall))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=["per-command", "per-channel"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        one_run(args.mode, args.messages)
        return
    for _run in range(args.runs):
        for mode in ("per-command", "per-channel"):
            subprocess.run([sys.executable, __file__, "--mode", mode, "--messages", str(args.messages)], check=True)


if __name__ == "__main__":
    main()
