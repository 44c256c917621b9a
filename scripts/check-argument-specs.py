#!/usr/bin/env python3
"""Fail when a role's defaults/main.yml and meta/argument_specs.yml (entry point main) disagree, or when another
entry point (preflight, deploy) validates other options than main.

Every default must be documented and every documented option must have a default, so the docs cannot drift.
"""
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def role_problems(role: Path) -> list[str]:
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    if not specs_file.is_file():
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.is_file() else {}
    specs = yaml.safe_load(specs_file.read_text())["argument_specs"]
    options = specs["main"].get("options") or {}
    problems = [f"{role.name}: default {k} is not in argument_specs" for k in sorted(set(defaults) - set(options))]
    problems += [
        f"{role.name}: argument_specs option {k} has no default and is not required"
        for k in sorted(set(options) - set(defaults))
        if not options[k].get("required")
    ]
    problems += [
        f"{role.name}: {k} is required but has a default" for k in sorted(set(options) & set(defaults))
        if options[k].get("required")
    ]
    # Other entry points (preflight, deploy) validate the same variables as main: one list, not a copy.
    problems += [f"{role.name}: entry point {name} has other options than main" for name, spec in specs.items()
                 if name != "main" and (spec.get("options") or {}) != options]
    return problems


def main() -> int:
    roles = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
    problems = [msg for role in roles for msg in role_problems(role)]
    for msg in problems:
        print(msg, file=sys.stderr)
    print(f"argument_specs: {len(roles)} roles checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
