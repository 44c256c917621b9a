"""Sizing arithmetic: table tests for typical VPS sizes, property tests, bad input."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ansible_collections.vpsstack.celery.plugins.module_utils import sizing
from ansible_collections.vpsstack.celery.plugins.module_utils.sizing import (
    SizingError,
    effective_resources,
    measured_child_mb,
    memory_plan,
    plan_table,
    redis_maxmemory,
    worker_concurrency,
)

MIB = 1048576
V1_UNLIMITED = "9223372036854771712"


def res(ram, vcpus=1):
    return {"ram_mb": ram, "vcpus": vcpus}


def group(**kw):
    item = {"name": "default"}
    item.update(kw)
    return item


# ------------------------------------------------------------------ effective_resources
class TestEffectiveResources:
    FACTS = {"memtotal_mb": 24000, "processor_vcpus": 2, "processor_nproc": 2}

    def test_facts_only(self):
        r = effective_resources(self.FACTS)
        assert (r["ram_mb"], r["vcpus"], r["cpu_slots"]) == (24000, 2.0, 2)
        assert (r["ram_source"], r["cpu_source"]) == ("facts", "facts")
        assert r["cgroup_ram_mb"] is None and r["cgroup_vcpus"] is None

    def test_container_1g_1cpu_v1(self):
        cg = {"version": 1, "memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"}
        r = effective_resources(self.FACTS, cg)
        assert (r["ram_mb"], r["vcpus"], r["cpu_slots"]) == (1024, 1.0, 1)
        assert (r["ram_source"], r["cpu_source"]) == ("cgroup", "cgroup")
        assert (r["facts_ram_mb"], r["facts_vcpus"]) == (24000, 2.0)

    def test_whole_module_result_is_accepted(self):
        cg = {"changed": False, "cgroup": {"version": 2, "memory_limit": "536870912", "cpu_quota": "max",
                                           "cpu_period": "100000"}}
        r = effective_resources(self.FACTS, cg)
        assert r["ram_mb"] == 512 and r["vcpus"] == 2.0 and r["cpu_source"] == "facts"

    @pytest.mark.parametrize("limit", [None, "", "max", "-1", V1_UNLIMITED, str(2 ** 60)])
    def test_memory_unlimited_sentinels(self, limit):
        r = effective_resources(self.FACTS, {"memory_limit": limit})
        assert r["ram_mb"] == 24000 and r["cgroup_ram_mb"] is None and r["ram_source"] == "facts"

    def test_limit_above_facts_does_not_limit(self):
        r = effective_resources(self.FACTS, {"memory_limit": str(32 * 1024 * MIB)})
        assert r["ram_mb"] == 24000 and r["ram_source"] == "facts" and r["cgroup_ram_mb"] == 32768

    @pytest.mark.parametrize("quota", [None, "", "max", "-1"])
    def test_cpu_unlimited_sentinels(self, quota):
        r = effective_resources(self.FACTS, {"cpu_quota": quota, "cpu_period": "100000"})
        assert r["vcpus"] == 2.0 and r["cgroup_vcpus"] is None

    def test_fractional_quota(self):
        r = effective_resources(self.FACTS, {"cpu_quota": "50000", "cpu_period": "100000"})
        assert r["vcpus"] == 0.5 and r["cpu_slots"] == 1
        r = effective_resources({"memtotal_mb": 4096, "processor_vcpus": 4}, {"cpu_quota": "150000"})
        assert r["vcpus"] == 1.5 and r["cpu_slots"] == 1  # missing period = the kernel default 100000

    def test_vcpu_fallbacks_and_prefixed_keys(self):
        assert effective_resources({"memtotal_mb": 900, "processor_nproc": 3})["vcpus"] == 3.0
        assert effective_resources({"ansible_memtotal_mb": 900, "ansible_processor_count": 1})["ram_mb"] == 900

    @pytest.mark.parametrize("facts,match", [
        ({"processor_vcpus": 1}, "memtotal_mb"),
        ({"memtotal_mb": 1024}, "processor_vcpus"),
        ({"memtotal_mb": 0, "processor_vcpus": 1}, "memtotal_mb must be at least 1"),
        ({"memtotal_mb": -5, "processor_vcpus": 1}, "memtotal_mb"),
        ({"memtotal_mb": "lots", "processor_vcpus": 1}, "memtotal_mb must be a number, got 'lots'"),
        ({"memtotal_mb": 1024, "processor_vcpus": 0}, "processor_vcpus must be positive"),
        ("not facts", "ansible_facts"),
    ])
    def test_bad_facts(self, facts, match):
        with pytest.raises(SizingError, match=match):
            effective_resources(facts)

    @pytest.mark.parametrize("cg,match", [
        ({"memory_limit": "1g"}, "memory_limit"),
        ({"memory_limit": "0"}, "memory_limit must be positive"),
        ({"cpu_quota": "abc"}, "cpu_quota"),
        ({"cpu_quota": "0"}, "cpu_quota must be positive"),
        ({"cpu_quota": "100000", "cpu_period": "0"}, "cpu_period"),
        ("1073741824", "cgroup must be the dict"),
    ])
    def test_bad_cgroup(self, cg, match):
        with pytest.raises(SizingError, match=match):
            effective_resources(self.FACTS, cg)


# ------------------------------------------------------------------ memory_plan: typical VPS sizes
# ram, vcpus, pool, workload, redis -> (os_reserve, redis maxmemory MB, concurrency, max_memory_per_child_kib)
TABLE = [
    (512, 1, "prefork", "mixed", True, (102, 35, 2, 109 * 1024)),
    (512, 1, "prefork", "mixed", False, (102, 0, 2, 160 * 1024)),
    (1024, 1, "prefork", "mixed", True, (204, 72, 2, 200 * 1024)),
    (1024, 1, "prefork", "cpu", True, (204, 72, 1, 200 * 1024)),
    (2048, 2, "prefork", "mixed", True, (300, 153, 4, 200 * 1024)),
    (4096, 2, "prefork", "cpu", False, (300, 0, 2, 200 * 1024)),
    (8192, 4, "prefork", "mixed", True, (300, 690, 8, 200 * 1024)),
    (16384, 8, "prefork", "cpu", True, (300, 1407, 8, 200 * 1024)),
    # io: up to 12 children per CPU slot, memory binds (no measurement: children at the costs' 100 MB).
    (1024, 1, "prefork", "io", True, (204, 72, 5, 105 * 1024)),
    (2048, 2, "prefork", "io", True, (300, 153, 12, 101 * 1024)),
    (1024, 1, "gevent", "io", True, (204, 72, 100, None)),
    (16384, 8, "gevent", "io", False, (300, 0, 100, None)),
]


@pytest.mark.parametrize("ram,vcpus,pool,workload,redis,expected", TABLE)
def test_typical_sizes(ram, vcpus, pool, workload, redis, expected):
    plan = memory_plan(res(ram, vcpus), [group(pool=pool, workload=workload)], redis_local=redis)
    g = plan["worker_groups"][0]
    got = (plan["os_reserve_mb"], plan["redis"]["maxmemory_bytes"] // MIB, g["concurrency"],
           g["max_memory_per_child_kib"])
    assert got == expected
    assert plan["total_mb"] + plan["free_mb"] == ram
    assert g["processes"] == (g["concurrency"] + 1 if pool == "prefork" else 1)


def test_512mb_box_with_redis_and_one_prefork_group_fits():
    # What a "512 MB" VPS really reports (memtotal_mb is below the nominal size).
    for ram, beat in ((450, False), (480, True), (512, True)):
        plan = memory_plan(res(ram), [group()], redis_local=True, beat=beat)
        assert plan["worker_groups"][0]["concurrency"] >= 1
        assert plan["redis"]["maxmemory_bytes"] >= 16 * MIB
        assert plan["total_mb"] <= ram


def test_redis_split_with_and_without_persistence():
    on = memory_plan(res(2048, 2), [group()], redis_local=True, redis_persistence=True)["redis"]
    off = memory_plan(res(2048, 2), [group()], redis_local=True, redis_persistence=False)["redis"]
    assert on["share_mb"] == off["share_mb"] == (2048 - 300) // 4
    assert on["fork_headroom_mb"] == on["share_mb"] // 2 and off["fork_headroom_mb"] == 0
    assert on["maxmemory_bytes"] == (on["share_mb"] - on["fork_headroom_mb"]) * MIB * 70 // 100
    assert off["maxmemory_bytes"] == off["share_mb"] * MIB * 70 // 100


@pytest.mark.parametrize("value, expected", [
    (268435456, 256 * MIB), ("256mb", 256 * MIB), ("256MB", 256 * MIB), ("256m", 256 * 10 ** 6),
    ("1gb", 1024 * MIB), ("1g", 10 ** 9), ("500kb", 500 * 1024), ("123", 123), ("123b", 123),
])
def test_redis_bytes_reads_redis_units(value, expected):
    assert sizing.redis_bytes(value) == expected


@pytest.mark.parametrize("value", ["70%", "256 mb", "256tb", "-1", 0, "0mb", "lots", True])
def test_redis_bytes_refuses_what_redis_would_misread(value):
    with pytest.raises(SizingError, match="redis_maxmemory"):
        sizing.redis_bytes(value)


def test_explicit_redis_maxmemory_is_what_the_plan_reserves():
    auto = memory_plan(res(2048, 2), [group(child_mb=400)], redis_local=True)
    plan = memory_plan(res(2048, 2), [group(child_mb=400)], redis_local=True, redis_maxmemory_bytes="300mb")
    redis = plan["redis"]
    assert redis["maxmemory_bytes"] == 300 * MIB
    # Same overhead (70 %) and fork headroom (persistence) as a computed maxmemory.
    assert redis["share_mb"] == 2 * -(-300 * 100 // 70) and redis["fork_headroom_mb"] == redis["share_mb"] // 2
    # The workers are sized into what is left, so they get less than with the computed share.
    assert plan["worker_groups"][0]["concurrency"] < auto["worker_groups"][0]["concurrency"]
    assert plan["total_mb"] <= 2048
    no_fork = memory_plan(res(2048, 2), [group()], redis_local=True, redis_persistence=False,
                          redis_maxmemory_bytes=300 * MIB)["redis"]
    assert no_fork["fork_headroom_mb"] == 0 and no_fork["share_mb"] == -(-300 * 100 // 70)


def test_explicit_redis_maxmemory_is_ignored_without_local_redis():
    plan = memory_plan(res(2048, 2), [group()], redis_local=False, redis_maxmemory_bytes="300mb")
    assert plan["redis"]["share_mb"] == 0 and plan["redis"]["maxmemory_bytes"] == 0


def test_explicit_redis_maxmemory_that_does_not_fit():
    with pytest.raises(SizingError, match=r"Redis maxmemory 999 MB \(redis_maxmemory\).*needs at least"):
        memory_plan(res(1024), [group()], redis_local=True, redis_maxmemory_bytes="999mb")
    plan = memory_plan(res(1024), [group()], redis_local=True, redis_maxmemory_bytes="999mb", strict=False)
    assert plan["total_mb"] <= 1024 and plan["redis"]["maxmemory_bytes"] == 999 * MIB
    assert any("redis_maxmemory" in w for w in plan["warnings"])


def test_dedicated_redis_host_gets_everything_left():
    plan = memory_plan(res(4096, 2), [], redis_local=True)
    assert plan["redis"]["share_mb"] == 4096 - 300
    assert plan["supervisord_mb"] == 0 and plan["free_mb"] == 0
    plan = memory_plan(res(4096, 2), [], redis_local=True, redis_share_pct=50, redis_maxmemory_pct=50)
    assert plan["redis"]["share_mb"] == (4096 - 300) // 2
    assert plan["redis"]["maxmemory_bytes"] == (plan["redis"]["share_mb"] // 2) * MIB // 2


def test_fixed_costs_counted_only_when_present():
    bare = memory_plan(res(2048, 2))
    assert (bare["supervisord_mb"], bare["beat_mb"], bare["flower_mb"], bare["total_mb"]) == (0, 0, 0, 300)
    full = memory_plan(res(2048, 2), [group()], beat=True, flower=True)
    assert (full["supervisord_mb"], full["beat_mb"], full["flower_mb"]) == (30, 60, 120)
    flower_only = memory_plan(res(2048, 2), flower=True)  # Flower runs under systemd, not supervisor
    assert (flower_only["supervisord_mb"], flower_only["flower_mb"]) == (0, 120)


def test_os_reserve_auto_and_explicit():
    assert memory_plan(res(400))["os_reserve_mb"] == 100
    assert memory_plan(res(512))["os_reserve_mb"] == 102
    assert memory_plan(res(1024))["os_reserve_mb"] == 204
    assert memory_plan(res(8192))["os_reserve_mb"] == 300
    assert memory_plan(res(8192), costs={"os_mb": 500})["os_reserve_mb"] == 500
    assert memory_plan(res(8192), os_reserve_mb=700)["os_reserve_mb"] == 700
    assert memory_plan(res(8192), os_reserve_mb="0")["os_reserve_mb"] == 0


@pytest.mark.parametrize("ram,swap", [(512, 512), (2048, 2048), (4096, 2048), (16384, 4096)])
def test_swap_auto(ram, swap):
    plan = memory_plan(res(ram))
    assert plan["swap_mb"] == swap and plan["total_mb"] <= ram  # swap is not memory


def test_swap_explicit():
    assert memory_plan(res(1024), swap_mb=0)["swap_mb"] == 0


def test_child_mb_and_costs_change_concurrency():
    small = memory_plan(res(1024, 4), [group(child_mb=50)])["worker_groups"][0]
    big = memory_plan(res(1024, 4), [group(child_mb=300)])["worker_groups"][0]
    assert small["concurrency"] == 8 and big["concurrency"] == 2
    cheap = memory_plan(res(1024, 4), [group()], costs={"prefork_child_mb": 50})["worker_groups"][0]
    assert cheap["concurrency"] == 8


def test_threads_and_solo():
    threads = memory_plan(res(2048, 2), [group(pool="threads", workload="io")])["worker_groups"][0]
    assert (threads["concurrency"], threads["processes"], threads["max_memory_per_child_kib"]) == (8, 1, None)
    cpu = memory_plan(res(2048, 2), [group(pool="threads", workload="cpu")])["worker_groups"][0]
    assert cpu["concurrency"] == 2
    solo = memory_plan(res(1024), [group(pool="solo")])["worker_groups"][0]
    assert (solo["concurrency"], solo["memory_mb"]) == (1, 100)


def test_gevent_is_bounded_by_memory():
    # 4 MB per greenlet: only what is left after OS, Redis, supervisord and the base process fits.
    plan = memory_plan(res(512), [group(pool="gevent")], redis_local=True, costs={"greenlet_kib": 4096})
    g = plan["worker_groups"][0]
    left = 512 - 102 - 102 - 30 - 55
    assert g["concurrency"] == left // 4 < 100 and g["memory_mb"] == 55 + 4 * g["concurrency"]


def test_gevent_cpu_bound_is_capped_and_warned():
    plan = memory_plan(res(2048, 2), [group(pool="gevent", workload="cpu")])
    assert plan["worker_groups"][0]["concurrency"] == 10
    assert any("prefork" in w for w in plan["warnings"])


def test_weights_split_the_worker_budget():
    plan = memory_plan(res(4096, 8), [group(name="a", weight=3), group(name="b", workload="io")],
                       costs={"prefork_child_mb": 200})
    a, b = plan["worker_groups"]
    assert a["concurrency"] > b["concurrency"] >= 1
    assert a["memory_mb"] + b["memory_mb"] <= 4096 - 300 - 25


def test_explicit_concurrency_wins_when_it_fits():
    plan = memory_plan(res(2048, 1), [group(concurrency=5)], redis_local=True)
    g = plan["worker_groups"][0]
    assert (g["concurrency"], g["explicit"], g["memory_mb"]) == (5, True, 60 + 500)


def test_explicit_cpu_bound_over_cap_warns():
    plan = memory_plan(res(4096, 1), [group(workload="cpu", concurrency=3)])
    assert plan["worker_groups"][0]["concurrency"] == 3
    assert any("CPU slot" in w for w in plan["warnings"])


def test_explicit_concurrency_that_does_not_fit_strict():
    with pytest.raises(SizingError) as err:
        memory_plan(res(1024), [group(concurrency=20)], redis_local=True)
    msg = str(err.value)
    assert "1024 MB" in msg and "'default'" in msg and "concurrency 20" in msg
    assert "5 fit" in msg and "needs at least 3086 MB" in msg
    assert "strict=false" in msg and "worker_strict" in msg  # says how to make it a warning


def test_explicit_concurrency_that_does_not_fit_lenient():
    plan = memory_plan(res(1024), [group(concurrency=20)], redis_local=True, strict=False)
    g = plan["worker_groups"][0]
    assert g["concurrency"] == 20 and plan["total_mb"] <= 1024
    assert len(plan["warnings"]) == 1 and "concurrency 20" in plan["warnings"][0]
    # roles/worker/tasks/preflight.yml selects overbooking warnings by this phrase (worker_strict).
    assert "more than the plan has" in plan["warnings"][0]


def test_explicit_max_memory_per_child_is_reserved():
    plan = memory_plan(res(2048, 2), [group(max_memory_per_child_kib=300 * 1024)])
    g = plan["worker_groups"][0]
    assert g["max_memory_per_child_kib"] == 300 * 1024
    assert g["memory_mb"] == 60 + 300 * g["concurrency"]


def test_max_memory_per_child_below_child_warns():
    plan = memory_plan(res(2048, 2), [group(max_memory_per_child_kib=50 * 1024)])
    assert any("recycled after every task" in w for w in plan["warnings"])


def test_autoscale():
    g = memory_plan(res(2048, 2), [group(autoscale="4,1")])["worker_groups"][0]
    assert (g["concurrency"], g["autoscale"], g["explicit"]) == (4, "4,1", True)
    g = memory_plan(res(2048, 2), [group(autoscale=[3, 0])])["worker_groups"][0]
    assert g["autoscale"] == "3,0"


def test_extra_keys_of_worker_groups_are_ignored():
    plan = memory_plan(res(1024), [group(queues=["a", "b"], extra_args="-O fair", state="started")])
    assert set(plan["worker_groups"][0]) == {
        "name", "pool", "workload", "concurrency", "processes",
        "max_memory_per_child_kib", "memory_mb", "explicit", "autoscale", "child_mb", "child_source",
    }


def test_plan_keys_contract():
    plan = memory_plan(res(1024), [group()], redis_local=True)
    assert {"ram_mb", "vcpus", "cpu_slots", "os_reserve_mb", "redis", "supervisord_mb", "beat_mb", "flower_mb",
            "worker_groups", "swap_mb", "total_mb", "free_mb", "warnings"} <= set(plan)
    assert set(plan["redis"]) == {"local", "share_mb", "maxmemory_bytes", "fork_headroom_mb", "results"}


def test_results_in_the_broker_redis_are_accounted_for():
    # A 1 GB host keeping results a day: maxmemory (about 72 MB) holds them up to about 1.6 tasks/s, and it warns.
    day = memory_plan(res(1024), [group()], redis_local=True, results_expires_s=86400)
    results = day["redis"]["results"]
    assert results["fill_tasks_per_s"] == round(day["redis"]["maxmemory_bytes"] / (530 * 86400), 2)
    assert 1 < results["fill_tasks_per_s"] < 2
    assert any("worker_result_expires" in w and "%s tasks/s" % results["fill_tasks_per_s"] in w
               for w in day["warnings"])
    assert any(line.startswith("task results") for line in sizing.plan_table(day))
    # An hour: 24 times the rate, above the warning threshold.
    hour = memory_plan(res(1024), [group()], redis_local=True, results_expires_s="3600")
    assert hour["redis"]["results"]["fill_tasks_per_s"] >= 10 and not hour["warnings"]
    # None kept here, or no Redis here: nothing to account for.
    assert memory_plan(res(1024), [group()], redis_local=True)["redis"]["results"] is None
    assert memory_plan(res(1024), [group()], results_expires_s=86400)["redis"]["results"] is None


def test_string_inputs_from_inventory_are_accepted():
    plan = memory_plan({"ram_mb": "2048", "vcpus": "2"}, [group(concurrency="3")], redis_local="yes",
                       redis_share_pct="30", redis_maxmemory_pct="60", strict="false", beat="no")
    assert plan["worker_groups"][0]["concurrency"] == 3 and plan["redis"]["share_mb"] == (2048 - 300) * 30 // 100


# ------------------------------------------------------------------ does not fit / bad input
@pytest.mark.parametrize("ram", [0, -1, -1024])
def test_zero_or_negative_ram(ram):
    with pytest.raises(SizingError, match="ram_mb must be positive"):
        memory_plan(res(ram), [group()])


def test_too_small_names_ram_and_minimum():
    with pytest.raises(SizingError) as err:
        memory_plan(res(300), [group()], redis_local=True)
    msg = str(err.value)
    assert msg.startswith("300 MB of RAM cannot fit") and "needs at least" in msg
    need = int(msg.rsplit("needs at least ", 1)[1].split()[0])
    memory_plan(res(need), [group()], redis_local=True)  # the minimum it names really fits
    with pytest.raises(SizingError):
        memory_plan(res(need - 1), [group()], redis_local=True)


def test_never_fits():
    with pytest.raises(SizingError, match="does not fit at any RAM size"):
        memory_plan(res(4096), [group()], redis_local=True, redis_share_pct=100)


@pytest.mark.parametrize("kwargs,match", [
    ({"worker_groups": [group(pool="forkserver")]}, "pool 'forkserver' is not one of prefork"),
    ({"worker_groups": [group(workload="gpu")]}, "workload 'gpu'"),
    ({"worker_groups": [group(concurrency=0)]}, "concurrency .* at least 1"),
    ({"worker_groups": [group(concurrency="many")]}, "concurrency.*'many'"),
    ({"worker_groups": [group(pool="gevent", max_memory_per_child_kib=102400)]}, "prefork pool only"),
    ({"worker_groups": [group(pool="threads", autoscale="4,1")]}, "autoscale works with the prefork pool only"),
    ({"worker_groups": [group(pool="solo", concurrency=2)]}, "solo"),
    ({"worker_groups": [group(autoscale="4")]}, "MAX,MIN"),
    ({"worker_groups": [group(autoscale="2,4")]}, "autoscale MIN must be at most 2"),
    ({"worker_groups": [group(concurrency=3, autoscale="4,1")]}, "not both"),
    ({"worker_groups": [{"pool": "prefork"}]}, r"worker_groups\[0\] needs a non-empty 'name'"),
    ({"worker_groups": [group(), group()]}, "used more than once"),
    ({"worker_groups": "default"}, "list of dicts"),
    ({"worker_groups": [group(workload="io")], "measured": "41000"}, "measured must be a dict"),
    ({"worker_groups": [group(workload="io")], "measured": {"app_kib": "lots"}}, "measured app_kib must be a number"),
    ({"worker_groups": [group(workload="io")], "measured": {"app_kib": -1}}, "app_kib must be at least 0"),
    ({"worker_groups": [group(workload="io")], "measured": {"app_kib": 40000, "shared_kib": "half"}},
     "measured shared_kib must be a number"),
    ({"worker_groups": [group(workload="io")], "measured": {"app_kib": 40000, "shared_kib": -5}},
     "shared_kib must be at least 0"),
    ({"worker_groups": [group(workload="io")], "measured": {"workers": [1]}}, "keyed by group"),
    ({"worker_groups": [group(workload="io")], "measured": {"workers": {"default": 5}}}, r"workers\['default'\]"),
    ({"worker_groups": [group(workload="io")], "measured": {"app_kib": 40000, "child_mb": {"default": 0}}},
     "recorded child_mb of 'default' must be at least 1"),
    ({"worker_groups": ["default"]}, "must be a dict"),
    ({"redis_share_pct": 0}, "redis_share_pct"),
    ({"redis_share_pct": "half"}, "redis_share_pct.*'half'"),
    ({"redis_maxmemory_pct": 101}, "redis_maxmemory_pct must be at most 100"),
    ({"redis_local": "maybe"}, "redis_local must be a boolean"),
    ({"costs": {"child_mb": 10}}, "unknown key 'child_mb'"),
    ({"costs": {"prefork_child_mb": "x"}}, "prefork_child_mb"),
    ({"costs": {"prefork_child_mb": 0}}, "at least 1"),
    ({"os_reserve_mb": -1}, "os_reserve_mb"),
    ({"swap_mb": "1.5"}, "swap_mb.*whole number"),
    ({"results_expires_s": -1}, "results_expires_s .worker_result_expires. must be at least 0"),
    ({"results_expires_s": "a day"}, "results_expires_s.*'a day'"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(SizingError, match=match):
        memory_plan(res(2048, 2), **kwargs)


def test_bad_resources():
    with pytest.raises(SizingError, match="ram_mb and vcpus"):
        memory_plan({"memtotal_mb": 1024})
    with pytest.raises(SizingError, match="vcpus must be positive"):
        memory_plan(res(1024, 0))
    with pytest.raises(SizingError, match="ram_mb must be a number"):
        memory_plan(res("1GB"))


# ------------------------------------------------------------------ conveniences
def test_worker_concurrency():
    plan = memory_plan(res(2048, 2), [group(name="a"), group(name="b", pool="gevent")])
    assert worker_concurrency(plan, "a") == plan["worker_groups"][0]["concurrency"]
    assert worker_concurrency(plan, "b") == 100
    with pytest.raises(SizingError, match="'c' is not in the plan; planned groups: 'a', 'b'"):
        worker_concurrency(plan, "c")
    with pytest.raises(SizingError, match="expected the dict from memory_plan"):
        worker_concurrency({"ram_mb": 1}, "a")


def test_redis_maxmemory():
    plan = memory_plan(res(2048, 2), [group()], redis_local=True)
    assert redis_maxmemory(plan) == str(plan["redis"]["maxmemory_bytes"])
    assert redis_maxmemory(268435456) == "268435456"
    assert redis_maxmemory("268435456") == "268435456"
    for bad, match in ((0, "positive"), (-1, "positive"), ("256mb", "number"), ({"a": 1}, "redis.maxmemory")):
        with pytest.raises(SizingError, match=match):
            redis_maxmemory(bad)
    with pytest.raises(SizingError, match="does not put Redis on this host"):
        redis_maxmemory(memory_plan(res(2048, 2), [group()]))


def test_plan_table():
    plan = memory_plan(dict(res(1024), ram_source="cgroup", cpu_source="cgroup"), [group()], redis_local=True,
                       beat=True)
    lines = plan_table(plan)
    text = "\n".join(lines)
    assert "1024 MB RAM (cgroup)" in text and "maxmemory %d bytes" % plan["redis"]["maxmemory_bytes"] in text
    assert any(line.startswith("worker default") and "concurrency 2" in line for line in lines)
    assert any(line.startswith("celery beat") for line in lines)
    assert lines[-1].startswith("swap") or lines[-1].startswith("WARNING")
    with pytest.raises(SizingError):
        plan_table({"x": 1})
    facts = effective_resources({"memtotal_mb": 24105, "processor_vcpus": 2},
                                {"memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"})
    first = plan_table(memory_plan(facts), facts)[0]
    assert "1024 MB RAM (cgroup; facts say 24105 MB), 1 vCPU (cgroup; facts say 2)" in first


# ------------------------------------------------------------------ properties
POOL = st.sampled_from(sizing.POOLS)
WORKLOAD = st.sampled_from(sizing.WORKLOADS)
GROUPS = st.lists(
    st.fixed_dictionaries({"pool": POOL, "workload": WORKLOAD},
                          optional={"weight": st.integers(1, 5), "child_mb": st.integers(20, 400)}),
    min_size=0, max_size=4,
).map(lambda items: [dict(item, name="g%d" % i) for i, item in enumerate(items)])
OPTIONS = st.fixed_dictionaries({
    "redis_local": st.booleans(),
    "redis_persistence": st.booleans(),
    "beat": st.booleans(),
    "flower": st.booleans(),
    "redis_share_pct": st.one_of(st.just("auto"), st.integers(1, 90)),
    "redis_maxmemory_pct": st.integers(1, 100),
    "redis_maxmemory_bytes": st.one_of(st.just("auto"), st.integers(1, 4096).map(lambda mb: mb * MIB)),
})
RAM = st.integers(1, 65536)
VCPUS = st.one_of(st.integers(1, 32), st.floats(0.1, 32, allow_nan=False))


def plan_or_none(ram, vcpus, groups, options):
    try:
        return memory_plan(res(ram, vcpus), groups, **options)
    except SizingError as exc:
        assert "cannot fit" in str(exc)
        return None


@settings(max_examples=300, deadline=None)
@given(RAM, VCPUS, GROUPS, OPTIONS)
def test_property_plan_never_exceeds_ram_and_concurrency_positive(ram, vcpus, groups, options):
    plan = plan_or_none(ram, vcpus, groups, options)
    if plan is None:
        return
    assert plan["total_mb"] <= ram and plan["free_mb"] == ram - plan["total_mb"] >= 0
    parts = (plan["os_reserve_mb"] + plan["redis"]["share_mb"] + plan["supervisord_mb"] + plan["beat_mb"]
             + plan["flower_mb"] + sum(g["memory_mb"] for g in plan["worker_groups"]))
    assert parts == plan["total_mb"]
    assert plan["redis"]["maxmemory_bytes"] <= plan["redis"]["share_mb"] * MIB
    for g in plan["worker_groups"]:
        assert g["concurrency"] >= 1
        if g["pool"] == "prefork":
            assert g["max_memory_per_child_kib"] >= (g.get("child_mb") or 0) * 1024
            assert g["concurrency"] <= max(1, int(vcpus + 1e-9)) * sizing.PREFORK_PER_SLOT[g["workload"]]
        else:
            assert g["max_memory_per_child_kib"] is None


@settings(max_examples=200, deadline=None)
@given(RAM, st.integers(1, 4000), VCPUS, GROUPS, OPTIONS)
def test_property_concurrency_monotone_in_ram(ram, more, vcpus, groups, options):
    small = plan_or_none(ram, vcpus, groups, options)
    big = plan_or_none(ram + more, vcpus, groups, options)
    if small is None:
        return
    assert big is not None, "fits in %d MB but not in %d MB" % (ram, ram + more)
    for a, b in zip(small["worker_groups"], big["worker_groups"]):
        assert b["concurrency"] >= a["concurrency"], (a, b)
    assert big["redis"]["maxmemory_bytes"] >= small["redis"]["maxmemory_bytes"]


@settings(max_examples=200, deadline=None)
@given(RAM, RAM, VCPUS, VCPUS, GROUPS, OPTIONS)
def test_property_too_small_names_a_minimum_that_fits(ram, _unused, vcpus, _unused2, groups, options):
    try:
        memory_plan(res(ram, vcpus), groups, **options)
    except SizingError as exc:
        text = str(exc)
        assume("needs at least" in text)
        need = int(text.rsplit("needs at least ", 1)[1].split()[0])
        assert need > ram
        memory_plan(res(need, vcpus), groups, **options)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 1 << 20), st.integers(1, 256),
       st.one_of(st.none(), st.just("max"), st.integers(1, 1 << 42).map(str)),
       st.one_of(st.none(), st.just("max"), st.just("-1"), st.integers(1000, 10 ** 7).map(str)),
       st.integers(1000, 10 ** 6))
def test_property_cgroup_limits_respected(facts_ram, facts_cpu, mem, quota, period):
    facts = {"memtotal_mb": facts_ram, "processor_vcpus": facts_cpu}
    cg = {"memory_limit": mem, "cpu_quota": quota, "cpu_period": str(period)}
    try:
        r = effective_resources(facts, cg)
    except SizingError as exc:
        assert int(mem) < MIB and "below 1 MB" in str(exc)
        return
    assert r["ram_mb"] <= facts_ram and r["vcpus"] <= facts_cpu
    if mem not in (None, "max"):
        assert r["ram_mb"] <= int(mem) // MIB
    if quota not in (None, "max", "-1"):
        assert r["vcpus"] <= round(int(quota) / float(period), 3)
    assert r["cpu_slots"] >= 1 and r["cpu_slots"] <= max(1, r["vcpus"])


# ------------------------------------------------------------------ generated docs stay in sync
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 4))


@pytest.mark.parametrize("doc", ["README.md", "docs/sizing.md"])
def test_sizing_table_in_sync(doc):
    path = os.path.join(REPO, doc)
    if not os.path.exists(path) or "<!-- sizing-table:start -->" not in open(path, encoding="utf-8").read():
        pytest.skip("%s has no sizing-table block" % doc)
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sizing-table.py"), "--check", path],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------ measured IO-bound prefork children
APP_KIB = 41000  # the settings check of the bench app: 40 MiB (a fresh child of it: 43 MiB)
SHARED_KIB = 18796  # what a fork of it still shared after gc.collect()


@pytest.mark.parametrize("measured,expected", [
    (None, None),
    ({}, None),
    ({"app_kib": None, "workers": {}}, None),
    ({"app_kib": 0}, None),
    ({"app_kib": APP_KIB}, 56),  # 40 MiB x 1.25 = 50, rounded up to 8 MB
    ({"app_kib": "41000"}, 56),  # from a fact file: a string
    ({"workers": {"default": {"child_peak_kib": 60000}}}, 80),  # a running child's peak counts without a check
    ({"app_kib": APP_KIB, "workers": {"default": {"child_peak_kib": 44744}}}, 56),  # the larger of the two
    ({"app_kib": APP_KIB, "workers": {"other": {"child_peak_kib": 900000}}}, 56),  # another group's children
    ({"app_kib": APP_KIB, "child_mb": {"default": 64}}, 64),  # within 25 %: the recorded size stays
    ({"app_kib": APP_KIB, "child_mb": {"default": 48}}, 48),
    ({"app_kib": APP_KIB, "child_mb": {"default": 80}}, 56),  # more than 25 % smaller now: shrinks
    ({"app_kib": APP_KIB, "child_mb": {"default": 40}}, 56),  # more than 25 % larger now: grows
    # What stays shared with the parent is in memory once: (41000 - 18 MiB) x 1.25 = 27.5 MiB, rounded up to 32.
    ({"app_kib": APP_KIB, "shared_kib": SHARED_KIB}, 32),
    ({"app_kib": APP_KIB, "shared_kib": str(SHARED_KIB)}, 32),
    ({"app_kib": APP_KIB, "shared_kib": None}, 56),
    ({"app_kib": APP_KIB, "shared_kib": SHARED_KIB, "workers": {"default": {"child_peak_kib": 44832}}}, 40),
    # A child always counts at least half its RSS: (80000 - 40000) x 1.25 = 48.8 MiB, not 2.1.
    ({"app_kib": 80000, "shared_kib": 79000}, 56),
])
def test_measured_child_mb(measured, expected):
    assert measured_child_mb("default", measured) == expected


def test_measured_children_size_io_prefork_groups_only():
    measured = {"app_kib": APP_KIB}
    groups = [group(name="io", workload="io"), group(name="mixed"), group(name="given", workload="io", child_mb=90),
              group(name="greenlets", pool="gevent")]
    plan = memory_plan(res(4096, 2), groups, redis_local=True, measured=measured)
    by_name = {g["name"]: g for g in plan["worker_groups"]}
    assert (by_name["io"]["child_mb"], by_name["io"]["child_source"]) == (56, "measured")
    assert (by_name["mixed"]["child_mb"], by_name["mixed"]["child_source"]) == (100, "costs")
    assert (by_name["given"]["child_mb"], by_name["given"]["child_source"]) == (90, "child_mb")
    assert (by_name["greenlets"]["child_mb"], by_name["greenlets"]["child_source"]) == (None, None)
    assert "child 56 MB (measured here)" in "\n".join(plan_table(plan))


def test_measured_children_raise_io_concurrency_and_keep_the_recycle_limit_above_them():
    """1 GB / 1 vCPU with Redis and Flower (the README's one-VPS stack): 5 children at the costs' 100 MB, 7 at the
    56 MB the bench app measures; each child is recycled past its share, never below its planned size."""
    before = memory_plan(res(1024, 1), [group(workload="io")], redis_local=True, flower=True)["worker_groups"][0]
    after = memory_plan(res(1024, 1), [group(workload="io")], redis_local=True, flower=True,
                        measured={"app_kib": APP_KIB})["worker_groups"][0]
    assert (before["concurrency"], after["concurrency"]) == (4, 7)
    assert 56 * 1024 <= after["max_memory_per_child_kib"] <= 2 * 56 * 1024
    # Never more children than 12 per CPU slot, however small they are.
    tiny = memory_plan(res(16384, 2), [group(workload="io")], measured={"app_kib": 10000})["worker_groups"][0]
    assert tiny["concurrency"] == 24


def test_shared_pages_count_once_and_the_recycle_limit_covers_them():
    """The bench app's children share 18 MiB with their parent: 32 MB each in the plan, so the one-VPS stack runs
    12 (the IO cap of one vCPU) instead of 7. billiard compares a child's peak RSS, shared pages included, with
    --max-memory-per-child: the limit is the child's size plus what it shares with the same headroom (18 x 1.25),
    never the 32 MB alone: a child is recycled at about 1.25 x its RSS, as before shared pages counted once."""
    measured = {"app_kib": APP_KIB, "shared_kib": SHARED_KIB}
    plan = memory_plan(res(1024, 1), [group(workload="io")], redis_local=True, flower=True, measured=measured)
    io = plan["worker_groups"][0]
    assert (io["concurrency"], io["child_mb"], io["child_source"]) == (12, 32, "measured")
    assert io["max_memory_per_child_kib"] == (32 + 23) * 1024
    assert io["memory_mb"] == 60 + 12 * 32
    assert plan["total_mb"] <= 1024
    # A group sized by its own child_mb or the costs keeps its size as the limit's floor.
    given = memory_plan(res(1024, 1), [group(workload="io", child_mb=90)], measured=measured)["worker_groups"][0]
    assert given["max_memory_per_child_kib"] >= 90 * 1024 and given["child_source"] == "child_mb"


def test_default_workload_is_mixed_for_prefork_and_io_for_greenlets():
    plan = memory_plan(res(4096, 2), [group(name="a"), group(name="b", pool="gevent")])
    assert [g["workload"] for g in plan["worker_groups"]] == ["mixed", "io"]
