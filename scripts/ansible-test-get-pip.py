"""Offline stand-in for get-pip.py, which ansible-test downloads from a host outside the package registries.

ansible-test runs this file as a module with pip's install arguments (e.g. `pip==24.2`): bootstrap the pip that
ships with Python (ensurepip), then let it install what was asked from the package index.
"""
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "-q"] + args))
