# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""redis_url: one place that builds a broker URL with safely quoted credentials. Docs: redis_url.yml."""
from __future__ import annotations

from urllib.parse import quote

from ansible.errors import AnsibleFilterError


def redis_url(host, port=6379, db=0, user="", password="", scheme="redis"):
    """Return scheme://[user:password@]host:port/db; user and password are percent-quoted.

    kombu unquotes both (kombu.utils.url.url_to_parts), so any character, '/', '@' and ':' included, is safe.
    """
    def fail(msg):
        raise AnsibleFilterError("redis_url: %s" % msg)

    if not isinstance(host, str) or not host.strip():
        fail("host must be a non-empty string, got %r" % (host,))
    if scheme not in ("redis", "rediss"):
        fail("scheme must be redis or rediss, got %r" % (scheme,))
    numbers = {}
    for name, value, low, high in (("port", port, 1, 65535), ("db", db, 0, 65535)):
        try:
            numbers[name] = int(str(value).strip())
        except ValueError:
            fail("%s must be a whole number, got %r" % (name, value))
        if not low <= numbers[name] <= high:
            fail("%s must be between %d and %d, got %d" % (name, low, high, numbers[name]))
    user, password = user or "", password or ""
    if user and not password:
        fail("user %r has no password: Redis cannot authenticate a user without one" % (user,))
    credentials = ""
    if password:
        credentials = "%s:%s@" % (quote(str(user), safe=""), quote(str(password), safe=""))
    host = host.strip()
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host  # IPv6 literal
    return "%s://%s%s:%d/%d" % (scheme, credentials, host, numbers["port"], numbers["db"])


class FilterModule(object):
    def filters(self):
        return {"redis_url": redis_url}
