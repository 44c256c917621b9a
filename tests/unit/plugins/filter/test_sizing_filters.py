"""The filter plugin: every filter is exposed, errors become AnsibleFilterError, Jinja use works."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vpsstack.celery.plugins.filter.sizing import FilterModule

FILTERS = FilterModule().filters()
# tests/conftest.py puts the .build/collections tree on sys.path
COLLECTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 4, ".build", "collections")
FACTS = {"memtotal_mb": 24000, "processor_vcpus": 2}
CGROUP_1G_1CPU = {"version": 1, "memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"}


def test_exposed_filters():
    assert set(FILTERS) == {"effective_resources", "memory_plan", "worker_concurrency", "redis_maxmemory",
                            "plan_table"}


def test_pipeline_container_1g_1cpu():
    resources = FILTERS["effective_resources"](FACTS, CGROUP_1G_1CPU)
    plan = FILTERS["memory_plan"](resources, worker_groups=[{"name": "default", "queues": ["celery"]}],
                                  redis_local=True, beat=True)
    assert plan["ram_mb"] == 1024 and plan["cpu_slots"] == 1
    assert FILTERS["worker_concurrency"](plan, "default") == 2
    assert FILTERS["redis_maxmemory"](plan) == str(plan["redis"]["maxmemory_bytes"])
    assert int(FILTERS["redis_maxmemory"](plan)) < 1024 * 1048576 // 4
    assert any("1024 MB RAM (cgroup)" in line for line in FILTERS["plan_table"](plan))


@pytest.mark.parametrize("name,args,kwargs,match", [
    ("effective_resources", ({"memtotal_mb": -1, "processor_vcpus": 1},), {}, "effective_resources: memtotal_mb"),
    ("effective_resources", ({"memtotal_mb": "abc", "processor_vcpus": 1},), {}, "'abc'"),
    ("memory_plan", ({"ram_mb": 0, "vcpus": 1},), {}, "memory_plan: ram_mb must be positive"),
    ("memory_plan", ({"ram_mb": 1024, "vcpus": 1}, [{"name": "a", "pool": "fork"}]), {}, "pool 'fork'"),
    ("memory_plan", ({"ram_mb": 256, "vcpus": 1}, [{"name": "a"}]), {"redis_local": True}, "needs at least"),
    ("memory_plan", ({"ram_mb": 1024, "vcpus": 1}, [{"name": "a", "pool": "gevent", "autoscale": "4,1"}]), {},
     "prefork pool only"),
    ("worker_concurrency", ({"worker_groups": [{"name": "a", "concurrency": 2}]}, "b"), {}, "planned groups: 'a'"),
    ("redis_maxmemory", (0,), {}, "must be positive"),
    ("plan_table", ("text",), {}, "plan_table expects"),
])
def test_errors_are_filter_errors(name, args, kwargs, match):
    with pytest.raises(AnsibleFilterError, match=match):
        FILTERS[name](*args, **kwargs)


JINJA = """
import sys
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
init_plugin_loader([sys.argv[1]])
facts = {"memtotal_mb": 24000, "processor_vcpus": 2}
cgroup = {"version": 2, "memory_limit": "1073741824", "cpu_quota": "100000", "cpu_period": "100000"}
templar = Templar(loader=None, variables={"ansible_facts": facts, "cg": cgroup, "wg": [{"name": "default"}]})
plan = templar.template(trust_as_template(
    "{{ ansible_facts | vpsstack.celery.effective_resources(cg)"
    " | vpsstack.celery.memory_plan(worker_groups=wg, redis_local=true) }}"))
templar.available_variables = {"plan": plan}
print(templar.template(trust_as_template("{{ plan | vpsstack.celery.worker_concurrency('default') }}")))
print(templar.template(trust_as_template("{{ plan | vpsstack.celery.redis_maxmemory }}")))
try:
    templar.template(trust_as_template("{{ plan | vpsstack.celery.worker_concurrency('nope') }}"))
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_through_ansible_templating():
    """Use the filters by FQCN in templates, the way the roles do (own process: Ansible's collection loader)."""
    out = subprocess.run([sys.executable, "-c", JINJA, COLLECTIONS], capture_output=True, text=True, check=True)
    concurrency, maxmemory, error = out.stdout.splitlines()[:3]
    assert concurrency == "2"
    assert 16 * 1048576 < int(maxmemory) < 1024 * 1048576 // 4
    assert "worker_concurrency: worker group 'nope' is not in the plan; planned groups: 'default'" in error
