"""redis_url: credentials survive the round trip through the parsing kombu does; bad input is refused."""
from __future__ import annotations

from urllib.parse import unquote, urlparse

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.vpsstack.celery.plugins.filter.urls import FilterModule

redis_url = FilterModule().filters()["redis_url"]


def parse_like_kombu(url):
    """kombu.utils.url.url_to_parts (5.5): HTTP URL semantics after the scheme, then unquote each part."""
    scheme = urlparse(url).scheme
    parts = urlparse("http://" + url[len(scheme) + 3:])
    return (scheme, parts.hostname, parts.port, unquote(parts.username or ""), unquote(parts.password or ""),
            parts.path.lstrip("/"))


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "redis://127.0.0.1:6379/0"),
    ({"password": "pw"}, "redis://:pw@127.0.0.1:6379/0"),
    ({"user": "celery", "password": "a/b@c:d e%", "db": 1}, "redis://celery:a%2Fb%40c%3Ad%20e%25@127.0.0.1:6379/1"),
    ({"port": "6380", "scheme": "rediss"}, "rediss://127.0.0.1:6380/0"),
])
def test_urls(kwargs, expected):
    assert redis_url("127.0.0.1", **kwargs) == expected


def test_ipv6_literal_is_bracketed():
    assert redis_url("::1") == "redis://[::1]:6379/0"
    assert parse_like_kombu(redis_url("fd00::5", password="x"))[1:3] == ("fd00::5", 6379)


@given(user=st.text(min_size=1), password=st.text(min_size=1))
def test_any_credentials_round_trip(user, password):
    url = redis_url("redis.internal", port=6380, db=2, user=user, password=password)
    assert parse_like_kombu(url) == ("redis", "redis.internal", 6380, user, password, "2")


@pytest.mark.parametrize("host, kwargs, message", [
    ("", {}, "host must be a non-empty string"),
    (None, {}, "host must be a non-empty string"),
    ("h", {"port": 0}, "port must be between 1 and 65535, got 0"),
    ("h", {"port": "abc"}, "port must be a whole number, got 'abc'"),
    ("h", {"db": -1}, "db must be between 0 and 65535, got -1"),
    ("h", {"scheme": "amqp"}, "scheme must be redis or rediss"),
    ("h", {"user": "celery"}, "user 'celery' has no password"),
])
def test_bad_input_names_the_argument(host, kwargs, message):
    with pytest.raises(AnsibleFilterError, match="redis_url: " + message):
        redis_url(host, **kwargs)
