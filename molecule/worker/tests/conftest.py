"""Test order: test_alerts.py stops and starts celery-default (a new pid), so its tests run right after
test_worker.py's check that the idempotent converge restarted nothing, while the stack is freshly converged."""


def pytest_collection_modifyitems(items):
    moved = [item for item in items if item.fspath.basename == "test_alerts.py"]
    rest = [item for item in items if item not in moved]
    anchor = next((n for n, item in enumerate(rest)
                   if item.name.startswith("test_second_converge_did_not_restart_workers")), -1)
    items[:] = rest[:anchor + 1] + moved + rest[anchor + 1:]
