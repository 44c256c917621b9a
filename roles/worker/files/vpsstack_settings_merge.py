"""How this host's guaranteed Celery settings meet the project's own, and how two clients' broker URLs compare.

Imported by vpsstack_celery_app.py (every program) and vpsstack_celery_check.py (the deploy check). Pure Python:
no Celery import, so the unit tests run it as is.

- A dict-valued setting (broker_transport_options, result_backend_transport_options) is merged: the project's
  keys stay (global_keyprefix, sep, priority_steps, queue_order_strategy: workers must read the keys producers
  write), ours are applied on top, and the visibility timeout is the larger of the two (a shorter one than the
  project asked for would redeliver its long tasks).
- Any other setting is ours as given.
"""
from urllib.parse import urlsplit

LARGER_WINS = ("visibility_timeout",)


def enforced_updates(project, enforced):
    """The values to apply on top of the project's configuration. project: a mapping with .get (app.conf)."""
    updates = {}
    for name, ours in enforced.items():
        theirs = project.get(name)
        if isinstance(ours, dict) and isinstance(theirs, dict):
            merged = dict(theirs)
            merged.update(ours)
            for key in LARGER_WINS:
                if isinstance(theirs.get(key), (int, float)) and key in ours:
                    merged[key] = max(theirs[key], ours[key])
            updates[name] = merged
        else:
            updates[name] = ours
    return updates


def mismatched(loaded, enforced):
    """Names of enforced settings the loaded app does not honour (dicts: each of our keys; larger-wins keys may
    be larger)."""
    names = []
    for name, ours in enforced.items():
        value = loaded.get(name)
        if isinstance(ours, dict):
            value = value if isinstance(value, dict) else {}
            if any(not _honours(key, value.get(key), wanted) for key, wanted in ours.items()):
                names.append(name)
        elif value != ours:
            names.append(name)
    return sorted(names)


def _honours(key, value, wanted):
    if key in LARGER_WINS and isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return value >= wanted
    return value == wanted


def mask(url):
    """The URL with its password replaced by ***, safe to print."""
    if not url:
        return url or ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = (parts.username or "") + ":***"
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=userinfo + "@" + host).geturl()


def _endpoint(url):
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return (parts.scheme, url.split("@")[-1])
    db = parts.path.strip("/") or "0"
    host = (parts.hostname or "localhost").lower()
    # Seen from the host that runs the check, every loopback name is the same Redis.
    host = "loopback" if host in ("localhost", "::1") or host.startswith("127.") else host
    return (parts.scheme, host, parts.port or 6379, db)


def endpoint_differences(ours, theirs):
    """What differs between two broker/backend URLs: scheme, host, port, database (credentials do not count).
    Empty when both point at the same place."""
    a, b = _endpoint(ours), _endpoint(theirs)
    if a == b:
        return []
    if a is None or b is None or a[0] != b[0] or len(a) != len(b):
        return ["URL"]
    labels = ("scheme", "host", "port", "database")
    return [label for label, x, y in zip(labels, a, b) if x != y]
