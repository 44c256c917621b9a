"""invalid_bind_addresses: IPv4/IPv6 (optionally '-'-prefixed) pass, anything Redis cannot bind is returned."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vpsstack.celery.plugins.filter.addresses import FilterModule

invalid = FilterModule().filters()["invalid_bind_addresses"]


def test_addresses_pass():
    assert invalid(["10.0.0.5", "127.0.0.1", "-::1", "::1", "fd00::5", "-192.168.1.2", "0.0.0.0"]) == []


def test_everything_else_is_returned_in_order():
    bad = ["redis.internal", "10.0.0.0/24", "", "10.0.0.256", " 10.0.0.5", "--10.0.0.5", "localhost", 5]
    assert invalid(["10.0.0.5"] + bad) == bad


@pytest.mark.parametrize("value", ["10.0.0.5", None, {"a": 1}])
def test_not_a_list_fails(value):
    with pytest.raises(AnsibleFilterError, match="expected a list"):
        invalid(value)
