# -*- coding: utf-8 -*-
# MIT License (see LICENSE)
"""Controller side of vpsstack.celery.files: render templates and read files, then one module call.

Modelled on ansible-core's template action (same search path, same ansible_managed and template_* variables),
minus the per-file copy: the rendered texts travel in the module's arguments, so a list costs one remote call.
"""
from __future__ import annotations

import hashlib
import json
import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

try:  # ansible-core 2.19+
    from ansible._internal._templating._template_vars import generate_ansible_template_vars
except ImportError:  # pragma: no cover - older ansible-core
    from ansible.template import generate_ansible_template_vars

CONTROLLER_KEYS = ("template", "src", "secret", "vars")
# What ansible.builtin.template renders with by default, so a template moved here renders byte for byte the same.
TEMPLATE_MODULE_DEFAULTS = {"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"}


def digest(module_args):
    """One hash of everything the call puts in place: equal digests, equal files (a record of what was checked)."""
    return hashlib.sha256(json.dumps(module_args, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        entries = self._task.args.get("files")
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise AnsibleActionFail("files must be a list of dicts")
        module_args = dict(self._task.args, files=[self._resolve(entry, task_vars) for entry in entries])
        files_digest = digest(module_args)  # before the call adds its own keys (_ansible_tmpdir, ...)
        result.update(self._execute_module(module_name="vpsstack.celery.files", module_args=module_args,
                                           task_vars=task_vars))
        result["digest"] = files_digest
        return result

    def _resolve(self, entry, task_vars):
        """One entry with its text in content (or secret_content), as the module takes it."""
        sources = [key for key in ("template", "src", "content") if entry.get(key) is not None]
        if len(sources) > 1:
            raise AnsibleActionFail("%s: give one of template, src and content, not %s" % (
                entry.get("dest"), " and ".join(sources)))
        resolved = {key: value for key, value in entry.items() if key not in CONTROLLER_KEYS}
        if "template" in sources:
            entry_vars = dict(task_vars, **(entry.get("vars") or {}))
            resolved["content"] = self._render(entry["template"], entry.get("dest"), entry_vars)
        elif "src" in sources:
            resolved["content"] = self._loader.get_text_file_contents(self._find(entry["src"], "files"))
        if entry.get("secret") and "content" in resolved:
            resolved["secret_content"] = resolved.pop("content")
        return resolved

    def _find(self, name, subdir):
        try:
            return self._find_needle(subdir, name)
        except AnsibleError as error:
            raise AnsibleActionFail(to_text(error))

    def _render(self, name, dest, task_vars):
        source = self._find(name, "templates")
        searchpath = list(task_vars.get("ansible_search_path", [])) + [self._loader._basedir, os.path.dirname(source)]
        searchpath = [path for base in searchpath for path in (os.path.join(base, "templates"), base)]
        template_vars = dict(task_vars)
        template_vars.update(generate_ansible_template_vars(
            path=name, fullpath=source, dest_path=dest,
            include_ansible_managed="ansible_managed" not in template_vars))
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=template_vars)
        text = templar.template(trust_as_template(self._loader.get_text_file_contents(source)),
                                escape_backslashes=False, overrides=TEMPLATE_MODULE_DEFAULTS)
        return "" if text is None else text
