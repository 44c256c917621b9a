"""vpsstack.celery.files through ansible-playbook on this controller (connection local): the action plugin renders
a role's template with ansible_managed and the task's variables, reads a role file, keeps secrets out of the
output, reports check mode and --diff truthfully, and a second run changes nothing and notifies no handler."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
TASKS = """
- name: Put the files in place
  vpsstack.celery.files:
    files:
      - {dest: "{{ out }}/conf.d", state: directory, mode: "0750"}
      - {dest: "{{ out }}/conf.d/app.conf", template: app.conf.j2, mode: "0640"}
      - {dest: "{{ out }}/conf.d/one.conf", template: app.conf.j2, vars: {workers: 1}, mode: "0640"}
      - {dest: "{{ out }}/conf.d/secret.conf", template: secret.conf.j2, secret: true, mode: "0600"}
      - {dest: "{{ out }}/conf.d/helper.py", src: helper.py, mode: "0644"}
      - {dest: "{{ out }}/conf.d/old.conf", state: absent}
  register: result
  notify: Note the change

- name: Show what the task returned
  ansible.builtin.debug:
    var: result
"""
HANDLERS = """
- name: Note the change
  ansible.builtin.copy:
    content: "{{ result.changed_files | to_json }}"
    dest: "{{ out }}/handler-ran"
    mode: "0644"
"""


@pytest.fixture()
def project(tmp_path):
    role = tmp_path / "roles" / "demo"
    for sub, name, text in [
        ("tasks", "main.yml", TASKS),
        ("handlers", "main.yml", HANDLERS),
        ("templates", "app.conf.j2", "{{ ansible_managed | comment }}\nworkers = {{ workers }}\n{% if workers > 1 %}\nmany = yes\n{% endif %}\n"),
        ("templates", "secret.conf.j2", "password = {{ password }}\n"),
        ("files", "helper.py", "print('{{ not templated }}')\n"),
    ]:
        (role / sub).mkdir(parents=True, exist_ok=True)
        (role / sub / name).write_text(text)
    (tmp_path / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles: [demo]\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "conf.d").mkdir()
    (tmp_path / "out" / "conf.d" / "old.conf").write_text("stale\n")
    return tmp_path


def play(project, *extra, workers=2):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_ROLES_PATH=str(project / "roles"), ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    variables = json.dumps({"out": str(project / "out"), "workers": workers, "password": "hunter2-secret",
                            "ansible_python_interpreter": sys.executable})
    proc = subprocess.run(["ansible-playbook", "-c", "local", "-i", "localhost,", "-e", variables, *extra,
                           str(project / "play.yml")], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    files_task = next(task for task in tasks if task["task"]["name"].endswith("Put the files in place"))
    return files_task["hosts"]["localhost"], proc.stdout


def test_renders_writes_changes_nothing_then_checks_with_diff(project):
    out = project / "out" / "conf.d"
    result, stdout = play(project)
    assert result["changed"] is True
    app_conf = (out / "app.conf").read_text()
    assert app_conf.startswith("#") and "Ansible managed" in app_conf.splitlines()[1]
    assert app_conf.endswith("workers = 2\nmany = yes\n")  # trim_blocks as ansible.builtin.template renders
    assert (out / "one.conf").read_text().endswith("\nworkers = 1\n")  # the entry's own vars
    assert (out / "secret.conf").read_text() == "password = hunter2-secret\n"
    assert (out / "helper.py").read_text() == "print('{{ not templated }}')\n"
    assert not (out / "old.conf").exists()
    assert json.loads((project / "out" / "handler-ran").read_text()) == result["changed_files"]
    assert "hunter2-secret" not in stdout

    (project / "out" / "handler-ran").unlink()
    again, _stdout = play(project)
    assert again["changed"] is False and again["changed_files"] == []
    assert len(again["digest"]) == 64 and again["digest"] == result["digest"]
    assert not (project / "out" / "handler-ran").exists()

    checked, stdout = play(project, "--check", "--diff", workers=1)
    assert checked["changed_files"] == [str(out / "app.conf")]
    assert (out / "app.conf").read_text() == app_conf
    assert checked["digest"] != result["digest"]
    (diff,) = checked["diff"]
    assert "many = yes" in diff["before"] and "many = yes" not in diff["after"]
    assert "hunter2-secret" not in stdout


def test_two_sources_for_one_file_are_refused(project):
    tasks = project / "roles" / "demo" / "tasks" / "main.yml"
    tasks.write_text(TASKS.replace("template: app.conf.j2,", "template: app.conf.j2, src: helper.py,"))
    with pytest.raises(AssertionError, match="give one of template, src and content"):
        play(project)
