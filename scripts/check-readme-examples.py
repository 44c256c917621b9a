#!/usr/bin/env python3
"""Fail when the README's inventory examples drift from what the `stack` scenario runs.

The INI inventory must equal molecule/stack/inventory/hosts line by line once host names, addresses and the
app's path are mapped (comments and spacing aside); the group_vars/flower.yml block must equal the scenario's
group_vars for flower. So every inventory a newcomer copies from the README is one a test has run.
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "molecule" / "stack"
# README name -> scenario name.
RENAMES = {
    "broker.example.net": "broker",
    "worker1.example.net": "worker1",
    "worker2.example.net": "worker2",
    "10.0.0.5": "10.89.177.10",
}
APP_SRC = re.compile(r"^(worker_app_src=).*$")


def fenced_blocks(text, language):
    return re.findall(r"^```%s\n(.*?)^```" % language, text, flags=re.S | re.M)


def ini_lines(text, renames=None):
    """Meaningful lines: comments and spacing dropped, names mapped, the app path replaced by a marker."""
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        for old, new in (renames or {}).items():
            line = line.replace(old, new)
        lines.append(APP_SRC.sub(r"\1<app>", " ".join(line.split())))
    return lines


def main():
    readme = (ROOT / "README.md").read_text()
    problems = []
    ini = fenced_blocks(readme, "ini")
    if len(ini) != 1:
        problems.append(f"README.md: expected one ```ini inventory block, found {len(ini)}")
    else:
        wanted = ini_lines((SCENARIO / "inventory" / "hosts").read_text())
        shown = ini_lines(ini[0], RENAMES)
        if shown != wanted:
            problems.append("README.md inventory differs from molecule/stack/inventory/hosts:\n  README:   %s\n"
                            "  scenario: %s" % (shown, wanted))
    flower = [b for b in fenced_blocks(readme, "yaml") if "flower_users" in b]
    scenario_flower = yaml.safe_load((SCENARIO / "inventory" / "group_vars" / "flower.yml").read_text())
    if len(flower) != 1:
        problems.append(f"README.md: expected one ```yaml block with flower_users, found {len(flower)}")
    elif yaml.safe_load(flower[0]) != scenario_flower:
        problems.append("README.md group_vars/flower.yml differs from molecule/stack/inventory/group_vars/flower.yml")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
