#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: files
short_description: Write a role's files and directories in one call
version_added: 0.2.0
description:
  - Puts a list of files, directories and absent paths in place on the target in one module call;
    each file is compared by content, owner, group and mode, and written only when it differs, by
    writing a temporary file next to it and renaming it over the old one.
  - The action plugin of the same name renders O(files[].template) and reads O(files[].src) on the
    controller, as M(ansible.builtin.template) and M(ansible.builtin.copy) do, so the target receives
    only the final contents. C(ansible.builtin.template) with C(copy) costs two module calls per file
    even when nothing changes (a C(stat), then C(file) for the attributes); this costs one per list.
  - Returns which paths changed, so a role can group its files by the handler they notify.
author:
  - vpsstack.celery maintainers (@vpsstack)
options:
  defaults:
    description: O(files[].owner), O(files[].group) and O(files[].mode) for the entries that do not set their own.
    type: dict
    default: {}
    suboptions:
      owner:
        description: Default owner.
        type: str
      group:
        description: Default group.
        type: str
      mode:
        description: Default mode.
        type: raw
  remove_unlisted:
    description:
      - Glob patterns (absolute) of paths this list owns; what matches one and is not a O(files[].dest) is removed,
        after the list is in place, and counted in RV(changed_files). For files named after a variable list
        (a program file per worker group); a group dropped from the list loses its file.
    type: list
    elements: str
    default: []
  files:
    description: What to put in place, in order (a directory before the files in it).
    type: list
    elements: dict
    required: true
    suboptions:
      dest:
        description: Absolute path on the target.
        type: path
        required: true
      state:
        description: C(file) writes O(files[].content) (a link in its place is replaced); C(directory) creates the
          directory and missing parents, or sets the attributes of the directory a link there points at;
          C(absent) removes a file, link or directory tree; C(lines) adds the O(files[].lines) an existing file
          lacks at its end, in the order given, and leaves the rest of it as it is (a distribution's file the role
          extends, as C(ansible.builtin.lineinfile) with C(insertafter=EOF) does for one line).
        type: str
        choices: [file, directory, absent, lines]
        default: file
      lines:
        description: For C(state=lines), the whole lines the file must hold; one already there, anywhere, is kept.
        type: list
        elements: str
      content:
        description:
          - The file's text. The action plugin fills it from O(files[].template) or O(files[].src).
        type: str
      secret_content:
        description:
          - The file's text when it holds a secret; never logged or shown in a diff. The action plugin fills it
            instead of O(files[].content) when O(files[].secret=true).
        type: str
      template:
        description: A template of the role (its C(templates/) directory), rendered on the controller with the
          task's variables, C(ansible_managed) included. Action plugin only.
        type: path
      vars:
        description: Variables for rendering this entry's O(files[].template) only (an C(item) of a list, say).
          Action plugin only.
        type: dict
      src:
        description: A file of the role (its C(files/) directory), sent as it is. Action plugin only.
        type: path
      secret:
        description: The content holds a secret (a password, a URL with one). Action plugin only.
        type: bool
        default: false
      owner:
        description: Owner of the file or directory; as it is when omitted.
        type: str
      group:
        description: Group of the file or directory; as it is when omitted.
        type: str
      mode:
        description: Mode, octal (C("0640")) or symbolic (C(u=rw,g=r,o=)); required for C(file), C(directory) and
          C(lines).
        type: raw
      validate:
        description:
          - Command run on the temporary file before it replaces O(files[].dest); C(%s) stands for its path.
            A non-zero exit fails the task naming the file, and the old file stays.
        type: str
attributes:
  check_mode:
    support: full
    description: Reports what would change; writes nothing.
  diff_mode:
    support: full
    description: Shows the content change of each file (secret ones excepted) and attribute changes.
  platform:
    support: full
    platforms: posix
    description: Any POSIX target with Python.
notes:
  - Files are text (UTF-8). Parents of a file must exist, or be created by an earlier C(directory) entry.
  - An owner or group that does not exist yet (a check run before the user is created) is reported as a change
    in check mode.
seealso:
  - module: ansible.builtin.template
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Render the settings and install the helpers
  vpsstack.celery.files:
    defaults: {owner: root, group: app, mode: "0640"}
    files:
      - {dest: /etc/app, state: directory, mode: "0750"}
      - {dest: /etc/app/settings.py, template: settings.py.j2, secret: true}
      - {dest: /etc/app/helper.py, src: helper.py}
      - {dest: /etc/app/old.py, state: absent}
  register: app_files
  notify: Restart app
"""

RETURN = r"""
digest:
  description: SHA-256 of the whole list as sent (paths, contents, owners, modes), from the action plugin; equal
    digests mean the call put the same files in place, so a role can record what a check proved.
  returned: always
  type: str
changed_files:
  description: The paths that changed (or would, in check mode), in the order given.
  returned: always
  type: list
  elements: str
  sample: [/etc/app/settings.py]
mtimes:
  description: When each listed path that exists last changed (C(st_mtime) of the path itself, seconds since the
    epoch), after the call. A process that started before a file it reads changed still runs the old one.
  returned: always
  type: dict
  sample: {/etc/app/settings.py: 1796554400.37}
"""

import glob
import grp
import os
import pwd
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text

MAX_DIFF_BYTES = 64 * 1024


def file_args(path, entry):
    return {"path": path, "owner": entry["owner"], "group": entry["group"], "mode": entry["mode"],
            "secontext": [None, None, None], "attributes": None}


def read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def owner_known(entry):
    """False when the owner or group does not exist yet (a check run before the role creates them)."""
    try:
        if entry["owner"] and not entry["owner"].isdigit():
            pwd.getpwnam(entry["owner"])
        if entry["group"] and not entry["group"].isdigit():
            grp.getgrnam(entry["group"])
    except KeyError:
        return False
    return True


def validate(module, entry, tmp_path):
    command = entry["validate"]
    if "%s" not in command:
        module.fail_json(msg="validate for %s must contain %%s (the temporary file)" % entry["dest"])
    # As ansible.builtin.copy and template run it: the command string, %s replaced, split like a shell line.
    rc, out, err = module.run_command(command % tmp_path)
    if rc != 0:
        # stdout and stderr as ansible.builtin.copy returns them (ansible_failed_result.stderr in a rescue).
        module.fail_json(msg="%s failed validation (%s), left as it was: %s" % (
            entry["dest"], command, (err or out).strip()), rc=rc, stdout=out, stderr=err)


def write_file(module, entry, content):
    dest = entry["dest"]
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", dir=os.path.dirname(dest))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        module.set_fs_attributes_if_different(file_args(tmp_path, entry), True)
        if entry["validate"]:
            validate(module, entry, tmp_path)
        os.replace(tmp_path, dest)
    finally:
        if os.path.lexists(tmp_path):
            os.unlink(tmp_path)


def content_diff(entry, before, after):
    hidden = entry["secret_content"] is not None
    too_big = max(len(before or b""), len(after)) > MAX_DIFF_BYTES
    if hidden or too_big or b"\0" in (before or b"") + after:
        note = "(secret)" if hidden else "(not shown)"
        return {"before_header": entry["dest"], "after_header": entry["dest"],
                "before": "" if before is None else note + "\n", "after": note + " changed\n"}
    return {"before_header": entry["dest"], "after_header": entry["dest"],
            "before": to_text(before or b""), "after": to_text(after)}


def ensure_file(module, entry, diffs):
    text = entry["secret_content"] if entry["secret_content"] is not None else entry["content"]
    if text is None:
        module.fail_json(msg="%s: state=file needs content (or template/src through the action plugin)" % entry["dest"])
    content = to_bytes(text, errors="surrogate_or_strict")
    dest = entry["dest"]
    if os.path.isdir(dest):
        module.fail_json(msg="%s is a directory, not a file" % dest)
    before = read_text(dest)
    if before != content:
        diffs.append(content_diff(entry, before, content))
        if not module.check_mode:
            write_file(module, entry, content)
        return True
    return ensure_attributes(module, entry, dest, diffs)


def ensure_lines(module, entry, diffs):
    dest = entry["dest"]
    if not entry["lines"]:
        module.fail_json(msg="%s: state=lines needs lines" % dest)
    before = read_text(dest)
    if before is None or os.path.isdir(dest):
        module.fail_json(msg="%s: state=lines adds lines to an existing file, and there is none" % dest)
    present = {line.rstrip(b"\r") for line in before.split(b"\n")}
    missing = [to_bytes(line, errors="surrogate_or_strict") for line in entry["lines"]]
    missing = [line for index, line in enumerate(missing) if line not in present and line not in missing[:index]]
    if not missing:
        return ensure_attributes(module, entry, dest, diffs)
    after = before + (b"\n" if before and not before.endswith(b"\n") else b"") + b"".join(
        line + b"\n" for line in missing)
    diffs.append(content_diff(entry, before, after))
    if not module.check_mode:
        write_file(module, entry, after)
    return True


def ensure_attributes(module, entry, path, diffs):
    """Owner, group and mode of an existing path; an owner that does not exist yet is a change (check mode)."""
    if module.check_mode and not owner_known(entry):
        return True
    attr_diff = {"before_header": entry["dest"], "after_header": entry["dest"], "before": {}, "after": {}}
    changed = module.set_fs_attributes_if_different(file_args(path, entry), False, attr_diff)
    if changed:
        diffs.append(attr_diff)
    return changed


def ensure_directory(module, entry, diffs):
    dest = entry["dest"]
    if os.path.lexists(dest) and not os.path.isdir(dest):
        module.fail_json(msg="%s exists and is not a directory" % dest)
    if not os.path.isdir(dest):
        diffs.append({"before_header": dest, "after_header": dest,
                      "before": {"path": dest, "state": "absent"}, "after": {"path": dest, "state": "directory"}})
        if not module.check_mode:
            os.makedirs(dest)
            module.set_fs_attributes_if_different(file_args(dest, entry), True)
        return True
    # A link to a directory (an application directory pointing at a release): the directory gets the attributes.
    return ensure_attributes(module, entry, os.path.realpath(dest), diffs)


def ensure_absent(module, entry, diffs):
    dest = entry["dest"]
    if not os.path.lexists(dest):
        return False
    diffs.append({"before_header": dest, "after_header": dest,
                  "before": {"path": dest, "state": "present"}, "after": {"path": dest, "state": "absent"}})
    if not module.check_mode:
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        else:
            os.unlink(dest)
    return True


ACTIONS = {"file": ensure_file, "directory": ensure_directory, "absent": ensure_absent, "lines": ensure_lines}


ENTRY_OPTIONS = {
    "dest": {"type": "path", "required": True},
    "state": {"type": "str", "choices": list(ACTIONS), "default": "file"},
    "content": {"type": "str"},
    "secret_content": {"type": "str", "no_log": True},
    "template": {"type": "path"},
    "src": {"type": "path"},
    "vars": {"type": "dict"},
    "secret": {"type": "bool", "default": False},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "mode": {"type": "raw"},
    "validate": {"type": "str"},
    "lines": {"type": "list", "elements": "str"},
}
ARGUMENT_SPEC = {
    "defaults": {"type": "dict", "default": {},
                 "options": {"owner": {"type": "str"}, "group": {"type": "str"}, "mode": {"type": "raw"}}},
    "remove_unlisted": {"type": "list", "elements": "str", "default": []},
    "files": {"type": "list", "elements": "dict", "required": True, "options": ENTRY_OPTIONS},
}


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    changed_files, diffs = [], []
    for entry in module.params["files"]:
        for key, value in module.params["defaults"].items():
            if entry[key] is None:
                entry[key] = value
        if entry["template"] or entry["src"] or entry["vars"]:
            module.fail_json(msg="%s: template, src and vars are read by the action plugin; call vpsstack.celery.files, "
                                 "not the module alone" % entry["dest"])
        if entry["state"] != "absent" and entry["mode"] is None:
            module.fail_json(msg="%s: mode is required for state=%s" % (entry["dest"], entry["state"]))
        try:
            if ACTIONS[entry["state"]](module, entry, diffs):
                changed_files.append(entry["dest"])
        except OSError as error:
            module.fail_json(msg="%s: %s" % (entry["dest"], to_text(error)), changed_files=changed_files)
    listed = {entry["dest"] for entry in module.params["files"]}
    for pattern in module.params["remove_unlisted"]:
        if not os.path.isabs(pattern):
            module.fail_json(msg="remove_unlisted pattern %s is not an absolute path" % pattern)
        for path in sorted(glob.glob(pattern)):
            if path not in listed and ensure_absent(module, {"dest": path}, diffs):
                changed_files.append(path)
    result = {"changed": bool(changed_files), "changed_files": changed_files, "mtimes": {}}
    for path in sorted(listed):
        try:
            result["mtimes"][path] = round(os.lstat(path).st_mtime, 2)
        except OSError:
            pass
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
