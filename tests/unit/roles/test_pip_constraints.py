"""The worker venv's pip constraints (roles/worker/templates/pip-constraints.txt.j2) pin what the runtime patches
were tested with: the same versions as their TESTED_VERSIONS and as requirements-dev.txt, whose kombu and redis
the patches' unit tests run. A bump of worker_celery_version or of one pin without the others fails here.

Rendered with plain Jinja2: the template uses nothing of Ansible's but the `comment` filter, stubbed below.
"""
from __future__ import annotations

import os

import jinja2
import pytest
import yaml
from role_files import REPO, load_worker_file

WORKER = os.path.join(REPO, "roles", "worker")
PATCHES = ["vpsstack_timer_compaction", "vpsstack_consumer_poll", "vpsstack_event_batching",
           "vpsstack_redis_clients"]


def pins(text):
    """{name: version} of the `name==version` lines of a requirements or constraints file."""
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[name.strip().lower()] = version.strip()
    return found


def render(celery_version):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(WORKER, "templates")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: "#\n# %s\n#" % text
    return env.get_template("pip-constraints.txt.j2").render(
        ansible_managed="Ansible managed", worker_celery_version=celery_version, worker_venv_dir="/opt/celery/venv")


def default_celery_version():
    with open(os.path.join(WORKER, "defaults", "main.yml"), encoding="utf-8") as fh:
        return yaml.safe_load(fh)["worker_celery_version"]


def test_the_default_celery_pins_what_every_patch_was_tested_with():
    version = default_celery_version()
    constrained = pins(render(version))
    assert constrained["celery"] == version
    for name in PATCHES:
        for library, tested in load_worker_file(name).TESTED_VERSIONS.items():
            assert constrained.get(library) == tested, (name, library)


def test_the_patches_unit_tests_run_the_pinned_versions():
    with open(os.path.join(REPO, "requirements-dev.txt"), encoding="utf-8") as fh:
        dev = pins(fh.read())
    constrained = pins(render(default_celery_version()))
    for library in ("kombu", "redis"):
        assert dev[library] == constrained[library], library


def test_the_pool_packages_are_left_to_pip():
    # gevent and eventlet come in the same pip call as Celery (tasks/venv.yml): not the patches' business.
    assert not {"gevent", "eventlet", "greenlet"} & set(pins(render(default_celery_version())))


@pytest.mark.parametrize("celery_version", ["5.6.2", "5.7.1"])
def test_another_celery_pins_only_itself(celery_version):
    # Its kombu may need another version than the patches know: they skip themselves there, pip decides.
    assert pins(render(celery_version)) == {"celery": celery_version}
