# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""stale_files: the files a running service has not read yet, left by a run that stopped before its restart.
Docs: stale_files.yml."""
from __future__ import annotations

from numbers import Real

from ansible.errors import AnsibleFilterError


def stale_files(results, started, only=None, margin=2.0):
    """Paths in the `mtimes` of vpsstack.celery.files results that this run did not change and that last changed
    more than `margin` seconds after the service started; [] when the start time is not a number (not running,
    or unreadable).

    A file this run changed is left out: its own handler restarts the service. The margin covers the start time
    host_facts reads (within a second of the real one) and file systems with coarse times."""
    def fail(msg):
        raise AnsibleFilterError("stale_files: %s" % msg)

    if isinstance(results, dict):
        results = [results]
    if not isinstance(results, (list, tuple)):
        fail("expected a list of vpsstack.celery.files results, got %s" % type(results).__name__)
    if only is not None and not isinstance(only, (list, tuple)):
        fail("only must be a list of paths, got %s" % type(only).__name__)
    if isinstance(margin, bool) or not isinstance(margin, Real) or margin < 0:
        fail("margin must be a number of seconds >= 0, got %r" % (margin,))
    if isinstance(started, bool) or not isinstance(started, Real):
        return []
    stale = []
    for result in results:
        result = result or {}
        if not isinstance(result, dict):
            fail("expected a vpsstack.celery.files result (a dict), got %s" % type(result).__name__)
        mtimes = result.get("mtimes") or {}
        if not isinstance(mtimes, dict):
            fail("mtimes must map paths to times, got %s" % type(mtimes).__name__)
        changed = result.get("changed_files") or []
        for path, mtime in mtimes.items():
            if only is not None and path not in only:
                continue
            if path in changed or path in stale:
                continue
            if isinstance(mtime, Real) and mtime > started + margin:
                stale.append(path)
    return stale


class FilterModule(object):
    def filters(self):
        return {"stale_files": stale_files}
