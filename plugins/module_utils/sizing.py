# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""Memory/CPU sizing of a Celery + Redis host. Pure Python: no Ansible imports.

Data flow: facts + cgroup limits -> effective_resources() -> memory_plan()
-> worker_concurrency() / redis_maxmemory() -> role templates.
Memory is in MB (MiB, 1048576 bytes) unless a name ends in _kib or _bytes.
Why each number is what it is: docs/sizing.md and the facts file it cites.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

MIB = 1048576
# cgroup v1 reports "no limit" as LONG_MAX rounded to a page; anything this big is no limit.
UNLIMITED_BYTES = 2 ** 60
DEFAULT_CFS_PERIOD_US = 100000
# 'auto' OS reserve: 20 % of RAM, at least this much, at most costs['os_mb'].
OS_RESERVE_FLOOR_MB = 100
OS_RESERVE_AUTO_PCT = 20
# 'auto' Redis share when workers share the host: this % of (RAM - OS reserve).
REDIS_AUTO_SHARE_PCT = 25
# Below this maxmemory a broker is not worth running; the plan refuses it.
REDIS_MIN_MAXMEMORY_MB = 16
SWAP_EQUAL_UP_TO_MB = 2048
SWAP_MAX_MB = 4096
# A prefork child that reaches this many times its expected RSS is recycled even when RAM is left.
CHILD_LIMIT_FACTOR = 2
# One small task result in Redis (celery-task-meta-<id>, a JSON body of ~170 bytes, with its TTL): INFO memory's
# used_memory grew by 529 bytes per result over 2000 results of an int-returning task (Redis 7.0.15 jemalloc,
# celery 5.7.0; MEMORY USAGE says 296 bytes per key, the rest is the keyspace and expires tables). docs/sizing.md.
RESULT_BYTES = 530
# Below this sustained rate results alone fill maxmemory within their expiry: the plan warns.
RESULTS_WARN_TASKS_PER_S = 10
MAX_RAM_SEARCH_MB = 1 << 22  # 4 TiB, the upper bound when looking for "what would fit"

DEFAULT_COSTS = {
    "os_mb": 300,  # what Ubuntu + sshd + journald need on a normal box (upper bound of 'auto')
    "worker_parent_mb": 60,  # prefork parent / threads pool process (measured 45-55 MiB)
    "prefork_child_mb": 100,  # one prefork child of a real app (measured 40 empty, 80-150 real)
    "beat_mb": 60,  # measured 45 MiB RSS (docs/benchmarks.md)
    "supervisord_mb": 30,  # supervisor 4.2.5 on Ubuntu 24.04: measured 28 MiB RSS (docs/benchmarks.md)
    # Flower keeps up to max_tasks tasks in RAM: measured 56 MiB idle, 102 MiB after 10000 small tasks and 113 MiB
    # after 15000 (flower 2.2.0, flower_max_tasks 10000: freed task records are not returned to the OS).
    "flower_mb": 120,
    "gevent_base_mb": 55,  # one gevent/eventlet worker process (measured ~55 MiB with -c 100)
    "greenlet_kib": 256,  # estimate: stack + what a task holds while it waits on I/O
    "greenlets_per_process": 100,  # I/O-bound default; mixed gets half, CPU-bound a tenth
    "thread_mb": 8,
}
POOLS = ("prefork", "threads", "gevent", "eventlet", "solo")
WORKLOADS = ("io", "cpu", "mixed")
# Without a declared workload: prefork is mixed (one child per slot would idle on IO, eight would starve CPU work);
# the pools made for waiting are io.
DEFAULT_WORKLOAD = {"prefork": "mixed"}
# An IO-bound prefork child of an app measured on this host (docs/sizing.md, "Measured children"): its largest RSS
# seen (the settings check loads what a worker loads before it forks; running children report their peak), less
# what a fork still shares with its parent after a full garbage collection (the check measures it: those pages are
# in memory once, in the parent), times this headroom for what tasks allocate, rounded up to MEASURED_ROUND_MB.
# --max-memory-per-child (billiard compares the child's peak RSS, shared pages included) recycles a child that
# grows past its size plus the shared part with the same headroom. A later measurement replaces the recorded size
# only when it is more than MEASURED_BAND larger or smaller: a child that grew a little or was recycled is no reason
# to restart the group.
MEASURED_HEADROOM = 1.25
MEASURED_ROUND_MB = 8
MEASURED_BAND = 0.25
# Concurrency cap per CPU slot. CPU-bound work gains nothing beyond one process per core. An IO-bound child mostly
# waits: a 50 ms call cost 3.6 ms of CPU per task in make bench (workers, Redis and Flower together), so 12 children
# keep about 80 % of a core busy and memory, sized from measurement, binds first.
PREFORK_PER_SLOT = {"cpu": 1, "mixed": 2, "io": 12}
THREADS_PER_SLOT = {"cpu": 1, "mixed": 2, "io": 4}
GREENLET_DIVISOR = {"io": 1, "mixed": 2, "cpu": 10}
# Redis's own units (redis.conf): k/m/g are powers of 1000, kb/mb/gb powers of 1024.
REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3, "gb": 1024 ** 3}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")


class SizingError(ValueError):
    """Bad input or a plan that does not fit; the message names the input and what would fit."""


class _TooSmall(Exception):
    """Internal: the plan does not fit in the RAM tried (the caller looks for the RAM that would)."""


# ---------------------------------------------------------------- input parsing
def _number(value, what, minimum=None, maximum=None, integer=False):
    """A number from int/float/numeric string; anything else is a SizingError naming `what`."""
    if isinstance(value, bool) or value is None:
        raise SizingError("%s must be a number, got %r" % (what, value))
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise SizingError("%s must be a number, got %r" % (what, value)) from None
    else:
        raise SizingError("%s must be a number, got %s %r" % (what, type(value).__name__, value))
    if isinstance(number, float):
        if math.isnan(number) or math.isinf(number):
            raise SizingError("%s must be a finite number, got %r" % (what, value))
        if integer:
            if number != int(number):
                raise SizingError("%s must be a whole number, got %r" % (what, value))
            number = int(number)
    if minimum is not None and number < minimum:
        raise SizingError("%s must be at least %s, got %r" % (what, minimum, value))
    if maximum is not None and number > maximum:
        raise SizingError("%s must be at most %s, got %r" % (what, maximum, value))
    return number


def _auto_or_int(value, what, minimum, maximum=None):
    """None for 'auto', else a whole number in range."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return _number(value, what + " ('auto' or a number)", minimum, maximum, integer=True)


def _boolean(value, what):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise SizingError("%s must be a boolean, got %r" % (what, value))


def redis_bytes(value, what="redis_maxmemory"):
    """None for 'auto', else a positive byte count from an int or a Redis size such as "256mb"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return None
        match = re.match(r"^([0-9]+)([kmg]?b?)$", text)
        if not match or match.group(2) not in REDIS_UNITS:
            raise SizingError("%s must be 'auto', bytes or a Redis size such as 256mb, got %r" % (what, value))
        number = int(match.group(1)) * REDIS_UNITS[match.group(2)]
    else:
        number = _number(value, what + " ('auto', bytes or e.g. 256mb)", integer=True)
    if number < 1:
        # Redis reads maxmemory 0 as "no limit": nothing the plan could reserve.
        raise SizingError("%s must be positive (0 means no limit to Redis), got %r" % (what, value))
    return number


def _fact(facts, *names):
    for name in names:
        for key in (name, "ansible_" + name):
            if key in facts and facts[key] is not None:
                return key, facts[key]
    return None, None


# ---------------------------------------------------------------- effective resources
def _cgroup_memory_mb(raw):
    """cgroup memory limit in MB, or None when unlimited."""
    if raw is None:
        return None
    text = str(raw).strip().lower()
    if text in ("", "max", "-1"):
        return None
    limit = _number(text, "cgroup memory_limit (bytes)", integer=True)
    if limit >= UNLIMITED_BYTES:
        return None
    if limit <= 0:
        raise SizingError("cgroup memory_limit must be positive bytes, 'max' or None, got %r" % (raw,))
    return limit // MIB


def _cgroup_vcpus(quota, period):
    """CPUs allowed by a CFS quota, or None when unlimited."""
    if quota is None:
        return None
    text = str(quota).strip().lower()
    if text in ("", "max"):
        return None
    quota_us = _number(text, "cgroup cpu_quota (microseconds)", integer=True)
    if quota_us < 0:  # v1 writes -1 for "no quota"
        return None
    if quota_us == 0:
        raise SizingError("cgroup cpu_quota must be positive, -1 or 'max', got %r" % (quota,))
    if period is None or str(period).strip() == "":
        period_us = DEFAULT_CFS_PERIOD_US
    else:
        period_us = _number(period, "cgroup cpu_period (microseconds)", minimum=1, integer=True)
    return round(quota_us / float(period_us), 3)


def effective_resources(facts, cgroup=None):
    """RAM MB and vCPUs this host really has: min(what facts say, what the cgroup allows)."""
    if not isinstance(facts, Mapping):
        raise SizingError("effective_resources expects ansible_facts (a dict), got %s" % type(facts).__name__)
    key, raw_ram = _fact(facts, "memtotal_mb")
    if key is None:
        raise SizingError("facts have no memtotal_mb: gather facts (at least the hardware subset)")
    facts_ram = _number(raw_ram, key, minimum=1, integer=True)
    key, raw_cpu = _fact(facts, "processor_vcpus", "processor_nproc", "processor_count")
    if key is None:
        raise SizingError("facts have no processor_vcpus/processor_nproc/processor_count: gather the hardware subset")
    facts_vcpus = float(_number(raw_cpu, key))
    if facts_vcpus <= 0:
        raise SizingError("%s must be positive, got %r" % (key, raw_cpu))

    if cgroup is None:
        cgroup = {}
    if not isinstance(cgroup, Mapping):
        raise SizingError("cgroup must be the dict returned by vpsstack.celery.host_facts, got %r" % (cgroup,))
    if isinstance(cgroup.get("cgroup"), Mapping):  # the whole registered module result
        cgroup = cgroup["cgroup"]
    cg_ram = _cgroup_memory_mb(cgroup.get("memory_limit"))
    cg_vcpus = _cgroup_vcpus(cgroup.get("cpu_quota"), cgroup.get("cpu_period"))
    if cg_ram is not None and cg_ram <= 0:
        raise SizingError("cgroup memory_limit %r is below 1 MB" % (cgroup.get("memory_limit"),))

    ram_from_cgroup = cg_ram is not None and cg_ram < facts_ram
    cpu_from_cgroup = cg_vcpus is not None and cg_vcpus < facts_vcpus
    vcpus = cg_vcpus if cpu_from_cgroup else facts_vcpus
    return {
        "ram_mb": cg_ram if ram_from_cgroup else facts_ram,
        "vcpus": vcpus,
        "cpu_slots": _cpu_slots(vcpus),
        "ram_source": "cgroup" if ram_from_cgroup else "facts",
        "cpu_source": "cgroup" if cpu_from_cgroup else "facts",
        "facts_ram_mb": facts_ram,
        "cgroup_ram_mb": cg_ram,
        "facts_vcpus": facts_vcpus,
        "cgroup_vcpus": cg_vcpus,
    }


def _cpu_slots(vcpus):
    # 1.5 CPUs run one CPU-bound process at full speed, not two; below 1 CPU there is still one slot.
    return max(1, int(math.floor(vcpus + 1e-9)))


# ---------------------------------------------------------------- memory plan
class _Group(object):
    """One validated worker group; memory units in KiB so greenlets and children share the arithmetic."""

    def __init__(self, item, index, costs, measured=None):
        if not isinstance(item, Mapping):
            raise SizingError("worker_groups[%d] must be a dict, got %r" % (index, item))
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SizingError("worker_groups[%d] needs a non-empty 'name', got %r" % (index, name))
        self.name = name
        where = "worker_groups[%d] (%r)" % (index, name)
        self.pool = str(item.get("pool", "prefork")).strip().lower()
        if self.pool not in POOLS:
            raise SizingError("%s: pool %r is not one of %s" % (where, item.get("pool"), ", ".join(POOLS)))
        self.workload = str(item.get("workload", DEFAULT_WORKLOAD.get(self.pool, "io"))).strip().lower()
        if self.workload not in WORKLOADS:
            raise SizingError("%s: workload %r is not one of %s"
                              % (where, item.get("workload"), ", ".join(WORKLOADS)))
        self.concurrency = _auto_or_int(item.get("concurrency", "auto"), where + " concurrency", 1)
        self.weight = _number(item.get("weight", 1), where + " weight", minimum=0.001)
        child_mb = item.get("child_mb")
        child_mb = None if child_mb is None else _number(child_mb, where + " child_mb", minimum=1, integer=True)
        self.max_kib = item.get("max_memory_per_child_kib")
        self.autoscale = item.get("autoscale")
        if self.pool != "prefork":
            for key in ("max_memory_per_child_kib", "autoscale"):
                if item.get(key) is not None:
                    raise SizingError("%s: %s works with the prefork pool only (Celery ignores it for %s)"
                                      % (where, key, self.pool))
        if self.max_kib is not None:
            self.max_kib = _number(self.max_kib, where + " max_memory_per_child_kib", minimum=1024, integer=True)
        if self.autoscale is not None:
            self.autoscale = self._autoscale(self.autoscale, where)
            if self.concurrency is not None and self.concurrency != self.autoscale[0]:
                raise SizingError("%s: set concurrency or autoscale, not both" % where)
            self.concurrency = self.autoscale[0]
        self.explicit = self.concurrency is not None

        if self.pool == "prefork":
            self.base_mb = costs["worker_parent_mb"]
            found = measured_child_mb(name, measured) if self.workload == "io" and not child_mb else None
            child = child_mb or found or costs["prefork_child_mb"]
            self.child_mb = child
            self.child_source = "child_mb" if child_mb else "measured" if found else "costs"
            # billiard recycles a child by its peak RSS, which counts the pages it shares with the parent too: the
            # same headroom on them recycles a measured child at about 1.25 x its RSS, as before they were counted.
            shared_mb = measured_shared_mb(measured) if found else 0
            self.limit_floor_mb = child + int(math.ceil(shared_mb * MEASURED_HEADROOM))
            # An explicit per-child limit lets each child grow that far: reserve it.
            limit_mb = int(math.ceil(self.max_kib / 1024.0)) if self.max_kib else 0
            self.unit_kib = max(child, limit_mb) * 1024
            self.cap = PREFORK_PER_SLOT[self.workload]
        elif self.pool == "threads":
            self.base_mb = child_mb or costs["worker_parent_mb"]
            self.unit_kib = costs["thread_mb"] * 1024
            self.cap = THREADS_PER_SLOT[self.workload]
        elif self.pool in ("gevent", "eventlet"):
            self.base_mb = child_mb or costs["gevent_base_mb"]
            self.unit_kib = costs["greenlet_kib"]
            self.cap = max(1, costs["greenlets_per_process"] // GREENLET_DIVISOR[self.workload])
        else:  # solo: one process runs the tasks itself, like a prefork child
            self.base_mb = child_mb or costs["prefork_child_mb"]
            self.unit_kib = 0
            self.cap = 1
            if self.concurrency not in (None, 1):
                raise SizingError("%s: the solo pool runs one task at a time; concurrency must be 1 or 'auto'"
                                  % where)
        self.where = where
        if self.pool != "prefork":
            self.child_mb = self.child_source = None

    @staticmethod
    def _autoscale(value, where):
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)) or len(parts) != 2:
            raise SizingError("%s: autoscale must be 'MAX,MIN' or [MAX, MIN], got %r" % (where, value))
        high = _number(parts[0], where + " autoscale MAX", minimum=1, integer=True)
        low = _number(parts[1], where + " autoscale MIN", minimum=0, maximum=high, integer=True)
        return high, low

    def cap_for(self, slots):
        return self.cap if self.pool in ("gevent", "eventlet", "solo") else self.cap * slots

    def need_mb(self, concurrency):
        """MB beyond base_mb that `concurrency` units reserve."""
        return int(math.ceil(concurrency * self.unit_kib / 1024.0))

    def fits(self, budget_mb):
        """How many units fit in budget_mb (beyond the base)."""
        if self.unit_kib == 0:
            return 1
        return int(budget_mb * 1024 // self.unit_kib)


def measured_child_mb(name, measured):
    """MB to plan for one IO-bound prefork child of group `name` from what this host measured, or None.

    `measured`: {"app_kib": RSS of the settings check after loading the app as a worker does, "shared_kib": what a
    fork of it still shares after a full collection, "workers": host_facts' running groups ({name: {"child_peak_kib":
    ...}}), "child_mb": {name: the size the last run planned}}.
    """
    if not measured:
        return None
    if not isinstance(measured, Mapping):
        raise SizingError("measured must be a dict (app_kib, workers, child_mb), got %r" % (measured,))
    workers = measured.get("workers") or {}
    recorded = measured.get("child_mb") or {}
    if not isinstance(workers, Mapping) or not isinstance(recorded, Mapping):
        raise SizingError("measured workers and child_mb must be dicts keyed by group, got %r" % (measured,))
    running = workers.get(name) or {}
    if not isinstance(running, Mapping):
        raise SizingError("measured workers[%r] must be a dict, got %r" % (name, running))
    seen = [_number(value, what, minimum=0, integer=True) for value, what in (
        (measured.get("app_kib"), "measured app_kib"), (running.get("child_peak_kib"), "child_peak_kib of %r" % name))
        if value not in (None, "")]
    if not seen or max(seen) == 0:
        return None
    own_kib = max(seen) - min(measured_shared_mb(measured) * 1024, max(seen) // 2)
    step = MEASURED_ROUND_MB
    size = int(math.ceil(own_kib * MEASURED_HEADROOM / 1024.0 / step)) * step
    previous = recorded.get(name)
    if previous in (None, ""):
        return size
    previous = _number(previous, "recorded child_mb of %r" % name, minimum=1, integer=True)
    return previous if abs(size - previous) <= previous * MEASURED_BAND else size


def measured_shared_mb(measured):
    """MB of a measured prefork child that stay shared with its parent (0 when not measured)."""
    shared = (measured or {}).get("shared_kib")
    if shared in (None, ""):
        return 0
    return int(_number(shared, "measured shared_kib", minimum=0, integer=True) // 1024)


def _costs(costs):
    merged = dict(DEFAULT_COSTS)
    if costs is None:
        costs = {}
    if not isinstance(costs, Mapping):
        raise SizingError("costs must be a dict of MB values, got %r" % (costs,))
    for key, value in costs.items():
        if key not in DEFAULT_COSTS:
            raise SizingError("costs: unknown key %r (known: %s)" % (key, ", ".join(sorted(DEFAULT_COSTS))))
        merged[key] = _number(value, "costs[%r]" % key, minimum=1 if key != "os_mb" else 0, integer=True)
    return merged


def _resources(resources):
    if not isinstance(resources, Mapping):
        raise SizingError("memory_plan expects the dict from effective_resources, got %r" % (resources,))
    if "ram_mb" not in resources or "vcpus" not in resources:
        raise SizingError("memory_plan input needs ram_mb and vcpus (use effective_resources), got keys %s"
                          % sorted(resources))
    ram = _number(resources["ram_mb"], "ram_mb", integer=True)
    if ram <= 0:
        raise SizingError("ram_mb must be positive, got %r" % (resources["ram_mb"],))
    vcpus = _number(resources["vcpus"], "vcpus")
    if vcpus <= 0:
        raise SizingError("vcpus must be positive, got %r" % (resources["vcpus"],))
    return ram, float(vcpus), _cpu_slots(vcpus)


def _os_reserve(ram, fixed, cap):
    if fixed is not None:
        return fixed
    return min(cap, max(OS_RESERVE_FLOOR_MB, ram * OS_RESERVE_AUTO_PCT // 100))


def _plan(ram, slots, o, groups):
    """The plan for `ram` MB; raises _TooSmall(what) if it does not fit."""
    costs = o["costs"]
    warnings = []
    os_mb = _os_reserve(ram, o["os_reserve_mb"], costs["os_mb"])
    # supervisor runs the worker groups and beat; Flower is a systemd service of its own (roles/flower).
    sup_mb = costs["supervisord_mb"] if groups or o["beat"] else 0
    beat_mb = costs["beat_mb"] if o["beat"] else 0
    flower_mb = costs["flower_mb"] if o["flower"] else 0
    fixed = sup_mb + beat_mb + flower_mb + sum(g.base_mb for g in groups)
    if os_mb + fixed > ram:
        raise _TooSmall("the OS reserve (%d MB) and the processes' base costs (%d MB)" % (os_mb, fixed))

    auto = [g for g in groups if not g.explicit]
    auto_min = sum(g.need_mb(1) for g in auto)
    share = headroom = maxmem_bytes = 0
    if o["redis_local"] and o["redis_maxmemory_bytes"] is not None:
        # An explicit maxmemory is what Redis will use: reserve it with the same overhead (maxmemory_pct) and
        # fork headroom as a computed one, so that the workers are not sized into memory Redis takes.
        maxmem_bytes = o["redis_maxmemory_bytes"]
        used = -(-maxmem_bytes * 100 // (o["redis_maxmemory_pct"] * MIB))
        headroom = used if o["redis_persistence"] else 0
        share = used + headroom
        room = ram - os_mb - fixed - auto_min
        if share > room:
            what = ("Redis maxmemory %d MB (redis_maxmemory) with its overhead and fork headroom (%d MB; %d MB "
                    "left after the OS and one worker child/thread per group)" % (maxmem_bytes // MIB, share, room))
            if o["strict"]:
                raise _TooSmall(what)
            warnings.append("%s needs %d MB more than the plan has; the plan reserves only what is left"
                            % (what, share - room))
            share = max(0, room)
            headroom = share // 2 if o["redis_persistence"] else 0
    elif o["redis_local"]:
        if o["redis_share_pct"] is not None:
            share = (ram - os_mb) * o["redis_share_pct"] // 100
        elif groups:
            share = (ram - os_mb) * REDIS_AUTO_SHARE_PCT // 100
        else:
            share = ram - os_mb - fixed
        # BGSAVE/AOF rewrite fork: copy-on-write can need the dataset size again.
        headroom = share // 2 if o["redis_persistence"] else 0
        maxmem_bytes = (share - headroom) * MIB * o["redis_maxmemory_pct"] // 100
        if maxmem_bytes < REDIS_MIN_MAXMEMORY_MB * MIB:
            raise _TooSmall("Redis (maxmemory of at least %d MB)" % REDIS_MIN_MAXMEMORY_MB)

    available = ram - os_mb - share - fixed
    if available < auto_min:
        raise _TooSmall("one worker child/thread per group (%d MB) after Redis (%d MB)" % (auto_min, share))

    reserved = {}
    room = available - auto_min
    for g in groups:
        if not g.explicit:
            continue
        need = g.need_mb(g.concurrency)
        if need > room:
            what = ("worker group %r with concurrency %d (%s, %d KiB each; %d fit in the %d MB left)"
                    % (g.name, g.concurrency, g.pool, g.unit_kib, g.fits(room), room))
            if o["strict"]:
                raise _TooSmall(what + ", an explicit value (strict=false, the roles' worker_strict, only warns)")
            warnings.append("%s needs %d MB more than the plan has; the plan reserves only %d MB for it"
                            % (what, need - room, room))
            need = room
        reserved[g.name] = need
        room -= need

    weights = sum(g.weight for g in auto)
    extra = room  # what is left after each auto group got one unit, split by weight
    result_groups = []
    for g in groups:
        cap = g.cap_for(slots)
        if g.explicit:
            concurrency, budget = g.concurrency, reserved[g.name]
            if concurrency > cap and g.pool in ("prefork", "threads") and g.workload == "cpu":
                warnings.append("worker group %r: concurrency %d is more than %d CPU slot(s) for CPU-bound work"
                                % (g.name, concurrency, slots))
        else:
            budget = g.need_mb(1) + int(extra * g.weight / weights)
            concurrency = max(1, min(cap, g.fits(budget)))
        if g.pool in ("gevent", "eventlet") and g.workload == "cpu":
            warnings.append("worker group %r: %s runs one task at a time on CPU; use prefork for CPU-bound work"
                            % (g.name, g.pool))
        max_kib = None
        memory = g.base_mb + min(budget, g.need_mb(concurrency))
        if g.pool == "prefork":
            if g.max_kib:
                max_kib = g.max_kib
                if max_kib < g.child_mb * 1024:
                    warnings.append("worker group %r: max_memory_per_child_kib %d is below one child's expected "
                                    "%d MB: children will be recycled after every task"
                                    % (g.name, max_kib, g.child_mb))
            else:
                # The child's share of the group budget, capped so a bloated child is recycled anyway.
                per_child = max(g.limit_floor_mb, min(budget // concurrency, g.child_mb * CHILD_LIMIT_FACTOR))
                if budget >= per_child * concurrency:
                    memory = g.base_mb + per_child * concurrency
                max_kib = per_child * 1024
        result_groups.append({
            "name": g.name,
            "pool": g.pool,
            "workload": g.workload,
            "concurrency": concurrency,
            "processes": concurrency + 1 if g.pool == "prefork" else 1,
            "max_memory_per_child_kib": max_kib,
            "child_mb": g.child_mb,
            "child_source": g.child_source,
            "memory_mb": memory,
            "explicit": g.explicit,
            "autoscale": "%d,%d" % g.autoscale if g.autoscale else None,
        })

    results = _results_in_redis(maxmem_bytes, o["results_expires_s"]) if o["redis_local"] else None
    if results and results["fill_tasks_per_s"] < RESULTS_WARN_TASKS_PER_S:
        warnings.append(
            "results go to this Redis (worker_result_backend=broker) and stay %d s at about %d bytes each: above "
            "%s tasks/s sustained they fill maxmemory (%d MB), and Redis evicts results (volatile-lru) before "
            "anyone reads them; shorten worker_result_expires, or keep results elsewhere"
            % (results["expires_s"], RESULT_BYTES, results["fill_tasks_per_s"], maxmem_bytes // MIB))
    if o["redis_local"] and maxmem_bytes < 64 * MIB:
        warnings.append("Redis maxmemory is only %d MB: enough for a queue of small messages, not for results"
                        % (maxmem_bytes // MIB))
    total = os_mb + share + sup_mb + beat_mb + flower_mb + sum(g["memory_mb"] for g in result_groups)
    if total > ram:  # a bug, not an input problem: the plan must never promise more than it has
        raise AssertionError("plan total %d MB exceeds %d MB" % (total, ram))
    if o["swap_mb"] is not None:
        swap = o["swap_mb"]
    elif ram <= SWAP_EQUAL_UP_TO_MB:
        swap = ram
    else:
        swap = min(SWAP_MAX_MB, ram // 2)
    return {
        "ram_mb": ram,
        "os_reserve_mb": os_mb,
        "redis": {
            "local": o["redis_local"],
            "share_mb": share,
            "maxmemory_bytes": maxmem_bytes,
            "fork_headroom_mb": headroom,
            "results": results,
        },
        "supervisord_mb": sup_mb,
        "beat_mb": beat_mb,
        "flower_mb": flower_mb,
        "worker_groups": result_groups,
        "swap_mb": swap,
        "total_mb": total,
        "free_mb": ram - total,
        "warnings": warnings,
    }


def _results_in_redis(maxmem_bytes, expires_s):
    """What task results kept `expires_s` seconds in this Redis cost: the sustained task rate (tasks/s) at which
    they alone fill maxmemory. None when no results go there (expires_s 0)."""
    if not expires_s or not maxmem_bytes:
        return None
    return {"expires_s": expires_s, "bytes_each": RESULT_BYTES,
            "fill_tasks_per_s": round(maxmem_bytes / (RESULT_BYTES * expires_s), 2)}


def _minimum_ram(ram, slots, o, groups):
    """Smallest RAM (MB) above `ram` for which the plan fits, or None."""
    def fits(candidate):
        try:
            _plan(candidate, slots, o, groups)
            return True
        except _TooSmall:
            return False

    if not fits(MAX_RAM_SEARCH_MB):
        return None
    low, high = ram, MAX_RAM_SEARCH_MB  # fits(low) is False, fits(high) is True; every cost grows with RAM
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high


def memory_plan(resources, worker_groups=None, redis_local=False, redis_share_pct="auto",
                redis_maxmemory_pct=70, redis_persistence=True, beat=False, flower=False, costs=None,
                os_reserve_mb="auto", swap_mb="auto", strict=True, redis_maxmemory_bytes="auto",
                results_expires_s=0, measured=None):
    """One memory plan per host: OS reserve, Redis share/maxmemory, worker concurrency, swap."""
    ram, vcpus, slots = _resources(resources)
    merged = _costs(costs)
    options = {
        "costs": merged,
        "redis_local": _boolean(redis_local, "redis_local"),
        "redis_share_pct": _auto_or_int(redis_share_pct, "redis_share_pct", 1, 100),
        "redis_maxmemory_pct": _number(redis_maxmemory_pct, "redis_maxmemory_pct", 1, 100, integer=True),
        "redis_persistence": _boolean(redis_persistence, "redis_persistence"),
        "beat": _boolean(beat, "beat"),
        "flower": _boolean(flower, "flower"),
        "os_reserve_mb": _auto_or_int(os_reserve_mb, "os_reserve_mb", 0),
        "swap_mb": _auto_or_int(swap_mb, "swap_mb", 0),
        "strict": _boolean(strict, "strict"),
        "redis_maxmemory_bytes": redis_bytes(redis_maxmemory_bytes, "redis_maxmemory_bytes (redis_maxmemory)"),
        "results_expires_s": _number(results_expires_s, "results_expires_s (worker_result_expires)", 0,
                                     integer=True),
    }
    if worker_groups is None:
        worker_groups = []
    if isinstance(worker_groups, (str, bytes, Mapping)) or not hasattr(worker_groups, "__iter__"):
        raise SizingError("worker_groups must be a list of dicts, got %r" % (worker_groups,))
    groups = [_Group(item, i, merged, measured) for i, item in enumerate(worker_groups)]
    names = [g.name for g in groups]
    for name in names:
        if names.count(name) > 1:
            raise SizingError("worker_groups: name %r is used more than once" % name)
    try:
        plan = _plan(ram, slots, options, groups)
    except _TooSmall as exc:
        need = _minimum_ram(ram, slots, options, groups)
        hint = ("needs at least %d MB" % need) if need else "does not fit at any RAM size (check the percentages)"
        raise SizingError("%d MB of RAM cannot fit %s: this plan %s" % (ram, exc, hint)) from None
    plan["vcpus"] = vcpus
    plan["cpu_slots"] = slots
    for key in ("ram_source", "cpu_source"):
        if key in resources:
            plan[key] = resources[key]
    return plan


# ---------------------------------------------------------------- conveniences
def worker_concurrency(plan, group_name):
    """The planned concurrency of one worker group."""
    groups = _plan_groups(plan)
    for group in groups:
        if group.get("name") == group_name:
            return int(group["concurrency"])
    raise SizingError("worker group %r is not in the plan; planned groups: %s"
                      % (group_name, ", ".join(repr(g.get("name")) for g in groups) or "none"))


def _plan_groups(plan):
    if not isinstance(plan, Mapping) or not isinstance(plan.get("worker_groups"), list):
        raise SizingError("expected the dict from memory_plan, got %r" % (plan,))
    return plan["worker_groups"]


def redis_maxmemory(plan_or_bytes):
    """Redis `maxmemory` as a plain byte count string, from a plan or a number of bytes."""
    if isinstance(plan_or_bytes, Mapping):
        redis = plan_or_bytes.get("redis")
        if not isinstance(redis, Mapping) or "maxmemory_bytes" not in redis:
            raise SizingError("expected the dict from memory_plan (with redis.maxmemory_bytes), got keys %s"
                              % sorted(plan_or_bytes))
        value = redis["maxmemory_bytes"]
        if not redis.get("local") or not value:
            raise SizingError("the plan does not put Redis on this host (redis.local is false); "
                              "set plan_redis_local or size the Redis host's own plan")
        what = "plan redis.maxmemory_bytes"
    else:
        value, what = plan_or_bytes, "maxmemory bytes"
    number = _number(value, what, integer=True)
    if number <= 0:
        raise SizingError("%s must be positive, got %r" % (what, value))
    return str(number)


def plan_table(plan, resources=None):
    """The plan as aligned text lines, for a debug msg; `resources` adds what the facts claimed."""
    if not isinstance(plan, Mapping) or "ram_mb" not in plan:
        raise SizingError("plan_table expects the dict from memory_plan, got %r" % (plan,))
    if resources is not None and not isinstance(resources, Mapping):
        raise SizingError("plan_table resources must be the dict from effective_resources, got %r" % (resources,))
    groups = _plan_groups(plan)
    redis = plan.get("redis") or {}
    ram_note, cpu_note = plan.get("ram_source", "given"), plan.get("cpu_source", "given")
    if resources and resources.get("facts_ram_mb") not in (None, plan["ram_mb"]):
        ram_note += "; facts say %s MB" % resources["facts_ram_mb"]
    if resources and resources.get("facts_vcpus") is not None and resources.get("facts_vcpus") != plan.get("vcpus"):
        cpu_note += "; facts say %s" % _fmt_cpu(resources["facts_vcpus"])
    lines = ["%-18s %6d MB RAM (%s), %s vCPU (%s), %d CPU slot(s)"
             % ("resources", plan["ram_mb"], ram_note, _fmt_cpu(plan.get("vcpus")), cpu_note,
                plan.get("cpu_slots", 1)),
             "%-18s %6d MB" % ("OS reserve", plan["os_reserve_mb"])]
    if redis.get("local"):
        lines.append("%-18s %6d MB  maxmemory %d bytes (%d MB), fork headroom %d MB"
                     % ("redis", redis["share_mb"], redis["maxmemory_bytes"], redis["maxmemory_bytes"] // MIB,
                        redis["fork_headroom_mb"]))
        if redis.get("results"):
            lines.append("%-18s %6s    kept %d s: maxmemory full at %s tasks/s sustained"
                         % ("task results", "", redis["results"]["expires_s"], redis["results"]["fill_tasks_per_s"]))
    else:
        lines.append("%-18s %6s" % ("redis", "-  (not on this host)"))
    for key, label in (("supervisord_mb", "supervisord"), ("beat_mb", "celery beat"), ("flower_mb", "flower")):
        if plan.get(key):
            lines.append("%-18s %6d MB" % (label, plan[key]))
    for g in groups:
        detail = "%s %s, concurrency %d%s, %d process(es)" % (
            g["pool"], g["workload"], g["concurrency"], " (explicit)" if g.get("explicit") else "", g["processes"])
        if g.get("max_memory_per_child_kib"):
            detail += ", max_memory_per_child %d KiB" % g["max_memory_per_child_kib"]
        if g.get("child_source") == "measured":
            detail += ", child %d MB (measured here)" % g["child_mb"]
        lines.append("%-18s %6d MB  %s" % ("worker " + g["name"], g["memory_mb"], detail))
    lines.append("%-18s %6d MB of %d MB, free %d MB" % ("total", plan["total_mb"], plan["ram_mb"], plan["free_mb"]))
    lines.append("%-18s %6d MB  (not counted as memory)" % ("swap", plan["swap_mb"]))
    for warning in plan.get("warnings") or []:
        lines.append("WARNING: " + warning)
    return lines


def _fmt_cpu(value):
    if value is None:
        return "?"
    return ("%.3f" % float(value)).rstrip("0").rstrip(".")
