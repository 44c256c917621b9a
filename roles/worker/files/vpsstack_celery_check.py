"""Load the app the way the programs do and report, as JSON on stdout, what a deploy must not go on without.

- "mismatched": settings the loaded app reports differently from the rendered ENFORCED dict (names only: the
  values can hold the broker password);
- "broker" / "backend": "ok" or why a PING to Redis with the app's own URLs failed, as this user on this host.
Usage: python vpsstack_celery_check.py SETTINGS_MODULE. Run by the worker role with the programs' environment
(PYTHONPATH, CELERY_CONFIG_MODULE, working directory).
"""
import importlib
import json
import sys


def ping(connect):
    try:
        connect()
        return "ok"
    except Exception as exc:  # report any failure: the play shows it and stops
        return "%s: %s" % (type(exc).__name__, exc)


def main(settings_module):
    from vpsstack_celery_app import app

    enforced = importlib.import_module(settings_module).ENFORCED

    conf = app.conf
    mismatched = sorted(name for name, wanted in enforced.items() if conf.get(name) != wanted)

    def broker():
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            conn.default_channel.client.ping()

    def backend():
        client = getattr(app.backend, "client", None)
        if client is not None:
            client.ping()

    json.dump({"app": app.main or "", "mismatched": mismatched, "broker": ping(broker),
               "backend": ping(backend)}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
