"""The version guard of the runtime patches (vpsstack_timer_compaction.py, vpsstack_consumer_poll.py,
vpsstack_event_batching.py, vpsstack_redis_clients.py): a patch reads private parts of Celery, kombu or redis-py,
so it installs only on the versions it was read against and measured with, and says so in one line otherwise
(docs/worker.md, "Patches and versions"; the audit looks for the line).
"""
import importlib
import logging
from importlib import metadata


def untested_versions(tested):
    """'kombu 5.8.0'-style descriptions of the libraries whose installed version is not the tested one."""
    found = []
    for name, version_tested in sorted(tested.items()):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "missing"
        if version != version_tested:
            found.append("%s %s" % (name, version))
    return found


def skipped(patch, tested):
    """True, after one warning line, when a library differs from the version the patch was tested with.

    The line is logged before Celery configures logging: Python's last-resort handler writes it to stderr, which
    supervisor sends to the program's log, where the audit looks for "patch skipped"."""
    untested = untested_versions(tested)
    if untested:
        logging.getLogger(patch).warning(
            "%s patch skipped: found %s; tested with %s", patch, ", ".join(untested),
            ", ".join("%s %s" % item for item in sorted(tested.items())))
    return bool(untested)


def wrap_once(patch, tested, owner_path, name, wrap):
    """Replace the method NAME of the class at OWNER_PATH ("module:Class") by wrap(original), once per process.

    False after skipped()'s line on other library versions, and when the module is missing; True once the method
    is wrapped (by this call or an earlier one)."""
    if skipped(patch, tested):
        return False
    module_name, class_name = owner_path.split(":")
    try:
        owner = getattr(importlib.import_module(module_name), class_name)
    except ImportError:
        return False
    original = getattr(owner, name)
    if getattr(original, "vpsstack_wrapped", False):
        return True
    wrapper = wrap(original)
    wrapper.vpsstack_wrapped = True
    setattr(owner, name, wrapper)
    return True
