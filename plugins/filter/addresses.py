# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""invalid_bind_addresses: what Redis's bind cannot take, checked without netaddr. Docs: the sidecar .yml."""
from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def invalid_bind_addresses(addresses):
    """Return the entries that are not an IPv4/IPv6 address, optionally prefixed by '-' (Redis: optional bind).

    Redis binds addresses only: a host name fails at start (or binds whatever it resolves to at that moment).
    """
    if isinstance(addresses, (str, bytes)) or not isinstance(addresses, (list, tuple)):
        raise AnsibleFilterError("invalid_bind_addresses: expected a list of addresses, got %r" % (addresses,))
    bad = []
    for entry in addresses:
        text = entry[1:] if isinstance(entry, str) and entry.startswith("-") else entry
        try:
            if not isinstance(text, str) or text != text.strip():
                raise ValueError(text)
            ipaddress.ip_address(text)
        except ValueError:
            bad.append(entry)
    return bad


class FilterModule(object):
    def filters(self):
        return {"invalid_bind_addresses": invalid_bind_addresses}
