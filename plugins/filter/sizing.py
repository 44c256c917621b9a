# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""Sizing filters: facts + cgroup limits -> one memory plan per host. Docs: the sidecar NAME.yml files."""
from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError

from ansible_collections.vpsstack.celery.plugins.module_utils.sizing import (
    SizingError,
    effective_resources,
    memory_plan,
    plan_table,
    redis_maxmemory,
    worker_concurrency,
)


def _filter(func):
    """Turn SizingError (bad input, plan does not fit) into the error Ansible reports for filters."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SizingError as exc:
            raise AnsibleFilterError("%s: %s" % (func.__name__, exc)) from exc
    return wrapper


class FilterModule(object):
    def filters(self):
        return {
            "effective_resources": _filter(effective_resources),
            "memory_plan": _filter(memory_plan),
            "worker_concurrency": _filter(worker_concurrency),
            "redis_maxmemory": _filter(redis_maxmemory),
            "plan_table": _filter(plan_table),
        }
