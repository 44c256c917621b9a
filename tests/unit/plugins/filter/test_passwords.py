"""sha512_crypt (plugins/filter/passwords.py): the specification's test vectors, openssl's output, glibc's, stable output, bad input."""
from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vpsstack.celery.plugins.filter.passwords import FilterModule, sha512_crypt

# Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", test vectors of SHA-512.
SPEC_VECTORS = [
    ("Hello world!", "saltstring", 5000,
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "saltstringsaltstring", 10000,
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs"
     "/y3RnOaw5v."),
    ("This is just a test", "toolongsaltstring", 5000,
     "$6$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
]


@pytest.mark.parametrize("password, salt, rounds, expected", SPEC_VECTORS)
def test_specification_vectors(password, salt, rounds, expected):
    assert sha512_crypt(password, salt, rounds) == expected


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
@pytest.mark.parametrize("password", ["twelve chars", "p/w@1:é ünïcode", "x" * 200])
def test_same_as_openssl_passwd(password):
    salt = "abcdef0123456789"
    openssl = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                             capture_output=True, text=True, check=True).stdout.strip()
    assert sha512_crypt(password, salt) == openssl


@pytest.mark.skipif(not ctypes.util.find_library("crypt"), reason="no libcrypt")
@pytest.mark.parametrize("password, setting", [("", "$6$abcdef0123456789"), ("twelve chars", "$6$rounds=1000$x"),
                                               ("p/w", "$6$rounds=77777$0123456789abcdefXYZ")])
def test_same_as_the_system_crypt(password, setting):
    # glibc's crypt(3) (libcrypt): also empty passwords, which openssl refuses, and rounds.
    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt"))
    libcrypt.crypt.restype = ctypes.c_char_p
    expected = libcrypt.crypt(password.encode(), setting.encode()).decode()
    salt = setting.split("$")[-1]
    rounds = int(setting.split("rounds=")[1].split("$")[0]) if "rounds=" in setting else 5000
    assert sha512_crypt(password, salt, rounds) == expected


def test_stable_and_salted():
    assert sha512_crypt("pw", "aaaa") == sha512_crypt("pw", "aaaa")
    assert sha512_crypt("pw", "aaaa") != sha512_crypt("pw", "aaab")
    assert FilterModule().filters()["sha512_crypt"] is sha512_crypt


@pytest.mark.parametrize("password, salt, rounds, message", [
    (None, "abc", 5000, "password must be a string"),
    (12345, "abc", 5000, "password must be a string"),
    ("pw", "", 5000, "salt must be"),
    ("pw", "bad salt", 5000, "salt must be"),
    ("pw", "$6$", 5000, "salt must be"),
    ("pw", "abc", 999, "between 1000"),
    ("pw", "abc", "many", "whole number"),
])
def test_bad_input_is_refused(password, salt, rounds, message):
    with pytest.raises(AnsibleFilterError, match=message):
        sha512_crypt(password, salt, rounds)
