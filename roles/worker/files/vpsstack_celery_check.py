"""Load the app and its task modules the way the programs do and report, as JSON on stdout, what a deploy must
not go on without.

- "mismatched": enforced settings the loaded app does not honour (names only: values can hold the password);
- "broker" / "backend": "ok" or why a PING to Redis with the app's own URLs failed, as this user on this host;
- "pickle": the serializer settings that would make workers accept or send pickle (refused by the role);
- "visibility_timeout": the workers' effective one (the project's, when it asked for more than the role);
- "key_options": the project's broker_transport_options that rename kombu's Redis keys and channels
  (global_keyprefix, ...): every other client of the broker (Flower, the audit, the watchdog) must use them too;
- "app_kib": this process's peak RSS after loading the app and the worker's own modules, what a prefork child
  starts from; "shared_kib": what a fork of it still shares with it after a full garbage collection (the plan sizes
  IO-bound prefork groups from both);
- "producer": the project's app loaded as its producers load it (no host settings; with the producer file's
  variables when they source it): its broker and backend (password masked) and what differs from the workers'.
Usage: python vpsstack_celery_check.py SETTINGS_MODULE APP true|false (producers source the producer file). Run by
the worker role with the programs' environment (PYTHONPATH, CELERY_CONFIG_MODULE, working directory).
    python vpsstack_celery_check.py --bare APP: the second load, in a clean interpreter (prints its view).
"""
import gc
import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys

from vpsstack_settings_merge import endpoint_differences, mask, mismatched

SERIALIZER_SETTINGS = ("task_serializer", "result_serializer", "accept_content", "result_accept_content")
# kombu 5.7 transport/redis.py: Channel.from_transport_options that change key or channel names.
KEY_OPTIONS = ("global_keyprefix", "sep", "fanout_prefix", "fanout_patterns", "priority_steps")
FORK_TIMEOUT_S = 60


def smaps_rollup_kib():
    """This process's memory by kind (Rss, Shared_Dirty, Private_Dirty, ...) in KiB (Linux 4.14 and later)."""
    with open("/proc/self/smaps_rollup", encoding="ascii") as rollup:
        rows = [line.split() for line in rollup if line.split()[-1:] == ["kB"]]
    return {row[0].rstrip(":"): int(row[1]) for row in rows}


def shared_after_collection_kib():
    """KiB a prefork child of this process still shares with it after a full collection, or None without
    /proc/self/smaps_rollup. A child's garbage collections write to every tracked object and copy its page (CPython
    3.12 keeps the collector's state in each object's header); what stays shared is code, strings and libraries.
    Measured with the bench app: a fresh fork shares 32 of its 33 MiB, after gc.collect() 18; its children, after
    1500 tasks, 21 of 43."""
    try:
        smaps_rollup_kib()
    except OSError:
        return None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and leaves without cleanup
        try:
            os.close(read)
            gc.collect()
            os.write(write, str(sum(kib for kind, kib in smaps_rollup_kib().items() if kind.startswith("Shared_")))
                     .encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        # A fork of a process whose other threads held a lock can hang: the check goes on without the number.
        shared = pipe.read() if select.select([pipe], [], [], FORK_TIMEOUT_S)[0] else ""
    if not shared:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return int(shared) if shared.isdigit() else None


def ping(connect):
    try:
        connect()
        return "ok"
    except Exception as exc:  # report any failure: the play shows it and stops
        return "%s: %s" % (type(exc).__name__, exc)


def view(app):
    """What a client of this app publishes to and reads from."""
    conf = app.conf
    options = conf.get("broker_transport_options") or {}
    return {"broker": conf.broker_url or "", "backend": conf.result_backend or "",
            "keyprefix": options.get("global_keyprefix", ""), "visibility_timeout": options.get("visibility_timeout")}


def pickle_settings(conf):
    found = []
    for name in SERIALIZER_SETTINGS:
        value = conf.get(name)
        values = value if isinstance(value, (list, tuple, set)) else [value]
        if any(str(v).rsplit("/", maxsplit=1)[-1] in ("pickle", "python-pickle") for v in values if v):
            found.append(name)
    return found


def producer_view(app_name, producer_env):
    """The project's app as its producers load it: a fresh interpreter, the project's directory only, none of the
    host's settings; with the producer file's variables (producer_env) when the producers source it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CELERY_CONFIG_MODULE", "PYTHONPATH", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env["PYTHONPATH"] = os.getcwd()
    env.update(producer_env)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--bare", app_name],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout)


def compare(workers, producers):
    """(differences, unset): what the producers name differently from the workers (a wrong broker that exists:
    tasks silently go elsewhere), and what they leave unset (they fail loudly when they try)."""
    differences, unset = {}, []
    if "error" in producers:
        return differences, unset
    for name in ("broker", "backend"):
        if not producers[name] and workers[name]:
            unset.append(name)
            continue
        found = endpoint_differences(workers[name], producers[name])
        if found:
            differences[name] = found
    if workers["keyprefix"] != producers["keyprefix"]:
        differences["broker"] = differences.get("broker", []) + ["global_keyprefix"]
    return differences, unset


def main(settings_module, app_name, producers_use_env_file="false"):
    from vpsstack_celery_app import app

    # What a worker imports before it consumes (celery/loaders/base.py, import_default_modules): `imports`,
    # `include` and autodiscover_tasks() (Django's fixup runs django.setup() here too). A task module that does
    # not import fails the check, as it would make every program FATAL after the restart.
    app.loader.import_default_modules()
    # What the worker imports before its pool forks (measured: this process's RSS then came within 3 MB of a fresh
    # prefork child of the same app).
    for module in ("celery.apps.worker", "celery.concurrency.prefork"):
        importlib.import_module(module)
    enforced = importlib.import_module(settings_module).ENFORCED
    conf = app.conf
    app_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shared_kib = shared_after_collection_kib()  # before this process opens connections a fork would share

    def broker():
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            conn.default_channel.client.ping()

    def backend():
        client = getattr(app.backend, "client", None)
        if client is not None:
            client.ping()

    workers = view(app)
    # What the role's producer file holds (producer.env.j2): the broker, and the backend when the role sets one.
    producer_env = {}
    if producers_use_env_file == "true":
        producer_env["CELERY_BROKER_URL"] = enforced["broker_url"]
        if enforced.get("result_backend"):
            producer_env["CELERY_RESULT_BACKEND"] = enforced["result_backend"]
    producers = producer_view(app_name, producer_env)
    differences, unset = compare(workers, producers)
    json.dump({
        "app": app.main or "",
        "mismatched": mismatched(conf, enforced),
        "broker": ping(broker),
        "backend": ping(backend),
        "pickle": pickle_settings(conf),
        "app_kib": app_kib,
        "shared_kib": shared_kib,
        "visibility_timeout": workers["visibility_timeout"],
        "key_options": {name: value for name, value in (conf.get("broker_transport_options") or {}).items()
                        if name in KEY_OPTIONS},
        "producer": {"broker": mask(producers.get("broker")), "backend": mask(producers.get("backend")),
                     "error": producers.get("error", ""), "unset": unset,
                     "differ": "; ".join("%s %s" % (name, ", ".join(what)) for name, what in differences.items()),
                     "workers_broker": mask(workers["broker"]), "workers_backend": mask(workers["backend"])},
    }, sys.stdout)


def bare(app_name):
    from celery.app.utils import find_app

    # This file's directory is the host's settings directory: a producer elsewhere has no such modules.
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [path for path in sys.path if not path or os.path.realpath(path) != here]

    json.dump(view(find_app(app_name)), sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "--bare":
        bare(sys.argv[2])
    else:
        main(*sys.argv[1:])
