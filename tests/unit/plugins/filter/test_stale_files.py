"""stale_files: files an earlier run changed after the service started, that this run did not change."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vpsstack.celery.plugins.filter.restarts import FilterModule

stale_files = FilterModule().filters()["stale_files"]

STARTED = 1000.0
SETTINGS = "/etc/flower/settings.py"
UNIT = "/etc/systemd/system/flower.service"


def result(mtimes, changed=()):
    return {"changed": bool(changed), "changed_files": list(changed), "mtimes": mtimes}


def test_a_file_newer_than_the_service_counts():
    assert stale_files([result({SETTINGS: STARTED + 30, UNIT: STARTED - 60})], STARTED) == [SETTINGS]


def test_a_file_this_run_changed_is_left_to_its_handler():
    assert stale_files([result({SETTINGS: STARTED + 30}, changed=[SETTINGS])], STARTED) == []


@pytest.mark.parametrize("mtime, margin, expected", [
    (STARTED + 2.0, 2.0, []),          # at the margin: not newer
    (STARTED + 2.01, 2.0, [SETTINGS]),
    (STARTED + 1.5, 1.0, [SETTINGS]),
    (STARTED + 0.1, 0, [SETTINGS]),
    (STARTED - 0.5, 0, []),
])
def test_the_margin(mtime, margin, expected):
    assert stale_files([result({SETTINGS: mtime})], STARTED, margin=margin) == expected


def test_only_the_listed_paths_count():
    live = "/etc/redis/redis.d/runtime.conf"  # applied with CONFIG SET: newer whenever it changed
    results = [result({live: STARTED + 30, SETTINGS: STARTED + 30}), result({UNIT: STARTED + 40})]
    assert stale_files(results, STARTED, only=[SETTINGS, UNIT]) == [SETTINGS, UNIT]


def test_results_in_order_a_path_once():
    results = [result({UNIT: STARTED + 9}), result({SETTINGS: STARTED + 9, UNIT: STARTED + 9})]
    assert stale_files(results, STARTED) == [UNIT, SETTINGS]


@pytest.mark.parametrize("started", [None, "", "1000", True])
def test_no_start_time_means_nothing_is_pending(started):
    """Not running (first run, check mode on a new host) or the start time was unreadable."""
    assert stale_files([result({SETTINGS: STARTED + 30})], started) == []


@pytest.mark.parametrize("results", [
    [None], [{}], [{"skipped": True, "changed": False}], [result({})], [result({SETTINGS: None})], []],
    ids=["undefined", "empty", "skipped", "no-mtimes", "no-time", "no-results"])
def test_results_without_times_give_nothing(results):
    assert stale_files(results, STARTED) == []


def test_one_result_is_taken_as_a_list():
    assert stale_files(result({SETTINGS: STARTED + 30}), STARTED) == [SETTINGS]


@pytest.mark.parametrize("results, kwargs, message", [
    ("flower.service", {}, "expected a list of vpsstack.celery.files results, got str"),
    (["x"], {}, "expected a vpsstack.celery.files result \\(a dict\\), got str"),
    ([{"mtimes": ["a"]}], {}, "mtimes must map paths to times, got list"),
    ([], {"only": SETTINGS}, "only must be a list of paths, got str"),
    ([], {"margin": -1}, "margin must be a number of seconds >= 0, got -1"),
    ([], {"margin": "2"}, "margin must be a number of seconds >= 0, got '2'"),
])
def test_bad_input_fails_naming_what_is_wrong(results, kwargs, message):
    with pytest.raises(AnsibleFilterError, match="stale_files: " + message):
        stale_files(results, STARTED, **kwargs)
