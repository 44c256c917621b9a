# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""sha512_crypt: SHA-512 crypt ($6$) on the controller, in pure Python. Docs: sha512_crypt.yml.

The algorithm of Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" (the one glibc's crypt(3) and
`openssl passwd -6` implement): the password never leaves the controller, and no crypt module or passlib is needed
(Python's crypt module is gone in 3.13). Checked against the specification's test vectors and `openssl passwd -6`
(tests/unit/plugins/filter/test_passwords.py).
"""
from __future__ import annotations

import hashlib

from ansible.errors import AnsibleFilterError

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SALT_CHARS = set(ITOA64)
ROUNDS_DEFAULT = 5000
# The byte triples of the final digest, in the order the specification encodes them; byte 63 goes last, alone.
ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48), (28, 49, 7),
         (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
         (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]


def _encode(b2, b1, b0, count):
    word = (b2 << 16) | (b1 << 8) | b0
    out = []
    for dummy in range(count):
        out.append(ITOA64[word & 0x3F])
        word >>= 6
    return "".join(out)


def _repeat(digest, length):
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password, salt, rounds=ROUNDS_DEFAULT):
    """Return the $6$ crypt string of password with salt (at most 16 characters of [./0-9A-Za-z] are used)."""
    if not isinstance(password, str):
        raise AnsibleFilterError("sha512_crypt: the password must be a string, got %s" % type(password).__name__)
    if not isinstance(salt, str) or not salt or not set(salt) <= SALT_CHARS:
        raise AnsibleFilterError("sha512_crypt: the salt must be a non-empty string of [./0-9A-Za-z], got %r"
                                 % (salt,))
    try:
        rounds = int(rounds)
    except (TypeError, ValueError):
        raise AnsibleFilterError("sha512_crypt: rounds must be a whole number, got %r" % (rounds,))
    if not 1000 <= rounds <= 999999999:
        raise AnsibleFilterError("sha512_crypt: rounds must be between 1000 and 999999999, got %d" % rounds)
    key, salt = password.encode("utf-8"), salt[:16]
    salt_bytes = salt.encode("ascii")

    alternate = hashlib.sha512(key + salt_bytes + key).digest()
    first = hashlib.sha512(key + salt_bytes + _repeat(alternate, len(key)))
    length = len(key)
    while length:
        first.update(alternate if length & 1 else key)
        length >>= 1
    digest = first.digest()

    key_sequence = _repeat(hashlib.sha512(key * len(key)).digest(), len(key))
    salt_sequence = _repeat(hashlib.sha512(salt_bytes * (16 + digest[0])).digest(), len(salt_bytes))
    for i in range(rounds):
        step = hashlib.sha512(key_sequence if i & 1 else digest)
        if i % 3:
            step.update(salt_sequence)
        if i % 7:
            step.update(key_sequence)
        step.update(digest if i & 1 else key_sequence)
        digest = step.digest()

    encoded = "".join(_encode(digest[a], digest[b], digest[c], 4) for a, b, c in ORDER) + _encode(0, 0, digest[63], 2)
    prefix = "$6$" if rounds == ROUNDS_DEFAULT else "$6$rounds=%d$" % rounds
    return "%s%s$%s" % (prefix, salt, encoded)


class FilterModule(object):
    def filters(self):
        return {"sha512_crypt": sha512_crypt}
