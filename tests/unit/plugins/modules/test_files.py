"""vpsstack.celery.files module on a temporary tree: writes, no-change, attributes, check mode, validate, absent."""
from __future__ import annotations

import grp
import json
import os
import pwd
import stat

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.vpsstack.celery.plugins.modules import files

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def run(capsys, entries, check=False, diff=False):
    args = {"files": entries, "_ansible_check_mode": check, "_ansible_diff": diff}
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            files.main()
    result = json.loads(capsys.readouterr().out)
    result["rc_exit"] = exc.value.code
    return result


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_new_file_then_reports_no_change(tmp_path, capsys):
    dest = str(tmp_path / "a.conf")
    entry = {"dest": dest, "content": "x = 1\n", "owner": ME, "group": MY_GROUP, "mode": "0640"}
    first = run(capsys, [entry])
    assert first["changed"] is True and first["changed_files"] == [dest]
    assert open(dest).read() == "x = 1\n" and mode_of(dest) == 0o640
    second = run(capsys, [entry])
    assert second["changed"] is False and second["changed_files"] == []


def test_reports_when_each_listed_path_last_changed(tmp_path, capsys):
    kept, gone = str(tmp_path / "kept.conf"), str(tmp_path / "gone.conf")
    with open(kept, "w") as handle:
        handle.write("x = 1\n")
    os.utime(kept, (1700000000.5, 1700000000.5))
    entry = {"dest": kept, "content": "x = 1\n", "owner": ME, "group": MY_GROUP, "mode": mode_of(kept)}
    result = run(capsys, [entry, {"dest": gone, "state": "absent"}])
    # An unchanged file keeps its time (what a process that read it compares with); an absent path has none.
    assert result["changed"] is False and result["mtimes"] == {kept: 1700000000.5}
    entry["content"] = "x = 2\n"
    assert run(capsys, [entry])["mtimes"][kept] > 1700000000.5


def test_only_the_differing_file_changes(tmp_path, capsys):
    same, other = str(tmp_path / "same"), str(tmp_path / "other")
    for path in (same, other):
        open(path, "w").write("old\n")
        os.chmod(path, 0o644)
    result = run(capsys, [{"dest": same, "content": "old\n", "mode": "0644"},
                          {"dest": other, "content": "new\n", "mode": "0644"}])
    assert result["changed_files"] == [other]
    assert open(other).read() == "new\n"


def test_mode_change_alone_is_a_change(tmp_path, capsys):
    dest = str(tmp_path / "f")
    open(dest, "w").write("same\n")
    os.chmod(dest, 0o644)
    result = run(capsys, [{"dest": dest, "content": "same\n", "mode": "0600"}], diff=True)
    assert result["changed_files"] == [dest] and mode_of(dest) == 0o600
    assert result["diff"][0]["before"]["mode"] == "0644" and result["diff"][0]["after"]["mode"] == "0600"


def test_check_mode_writes_nothing_and_diffs_the_content(tmp_path, capsys):
    dest = str(tmp_path / "f")
    open(dest, "w").write("a\n")
    result = run(capsys, [{"dest": dest, "content": "b\n", "mode": "0644"}], check=True, diff=True)
    assert result["changed"] is True and open(dest).read() == "a\n"
    assert result["diff"] == [{"before_header": dest, "after_header": dest, "before": "a\n", "after": "b\n"}]


def test_check_mode_with_missing_parent_and_owner_reports_a_change(tmp_path, capsys):
    dest = str(tmp_path / "not-yet" / "f")
    result = run(capsys, [{"dest": dest, "content": "b\n", "owner": "no-such-user-xyz", "mode": "0644"}], check=True)
    assert result["changed_files"] == [dest] and not os.path.exists(os.path.dirname(dest))


def test_secret_content_is_never_shown(tmp_path, capsys):
    dest = str(tmp_path / "settings.py")
    result = run(capsys, [{"dest": dest, "secret_content": "password = 'hunter2'\n", "mode": "0600"}], diff=True)
    assert result["changed"] is True
    assert "hunter2" not in json.dumps(result)
    assert open(dest).read() == "password = 'hunter2'\n"


def test_failed_validation_keeps_the_old_file(tmp_path, capsys):
    dest = str(tmp_path / "f")
    open(dest, "w").write("good\n")
    result = run(capsys, [{"dest": dest, "content": "bad\n", "mode": "0644",
                           "validate": "sh -c 'grep -q good %s || { echo no good >&2; exit 1; }'"}])
    assert result["rc_exit"] == 1 and dest in result["msg"] and "failed validation" in result["msg"]
    assert result["stderr"] == "no good\n" and result["rc"] == 1
    assert open(dest).read() == "good\n"
    assert os.listdir(tmp_path) == ["f"]  # no temporary file left behind


def test_passing_validation_writes(tmp_path, capsys):
    dest = str(tmp_path / "f")
    result = run(capsys, [{"dest": dest, "content": "good\n", "mode": "0644", "validate": "grep -q good %s"}])
    assert result["changed"] is True and open(dest).read() == "good\n"


def test_directory_then_file_in_it(tmp_path, capsys):
    directory = str(tmp_path / "d")
    entries = [{"dest": directory, "state": "directory", "mode": "0750"},
               {"dest": directory + "/f", "content": "x\n", "mode": "0640"}]
    assert run(capsys, entries)["changed_files"] == [directory, directory + "/f"]
    assert mode_of(directory) == 0o750
    assert run(capsys, entries)["changed"] is False


def test_absent_removes_files_and_trees(tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    single = tmp_path / "single"
    single.write_text("x")
    entries = [{"dest": str(tree), "state": "absent"}, {"dest": str(single), "state": "absent"}]
    assert run(capsys, entries)["changed_files"] == [str(tree), str(single)]
    assert not tree.exists() and not single.exists()
    assert run(capsys, entries)["changed"] is False


@pytest.mark.parametrize("entry, message", [
    ({"content": "x", "mode": "0644", "dest": "/tmp/x", "state": "link"}, "value of state must be one of"),
    ({"content": "x", "dest": "/tmp/x"}, "mode is required"),
    ({"dest": "/tmp/x", "mode": "0644"}, "needs content"),
    ({"template": "a.j2", "dest": "/tmp/x", "mode": "0644"}, "read by the action plugin"),
])
def test_bad_entries_are_refused_naming_the_problem(capsys, entry, message):
    result = run(capsys, [entry])
    assert result["rc_exit"] == 1 and message in result["msg"]


def test_a_directory_in_the_way_of_a_file_fails_naming_it(tmp_path, capsys):
    result = run(capsys, [{"dest": str(tmp_path), "content": "x", "mode": "0644"}])
    assert result["rc_exit"] == 1 and "is a directory" in result["msg"]


def test_defaults_fill_what_an_entry_leaves_out(tmp_path, capsys):
    own, inherited = str(tmp_path / "own"), str(tmp_path / "inherited")
    with patch_module_args({"defaults": {"mode": "0600"}, "files": [
            {"dest": own, "content": "x", "mode": "0644"}, {"dest": inherited, "content": "x"}]}):
        with pytest.raises(SystemExit):
            files.main()
    capsys.readouterr()
    assert (mode_of(own), mode_of(inherited)) == (0o644, 0o600)


def test_remove_unlisted_removes_what_the_list_no_longer_names(tmp_path, capsys):
    kept, gone, other = (str(tmp_path / name) for name in ("celery-a.conf", "celery-b.conf", "nginx.conf"))
    for path in (gone, other):
        open(path, "w").write("x")
    with patch_module_args({"remove_unlisted": [str(tmp_path / "celery-*.conf")],
                            "files": [{"dest": kept, "content": "x", "mode": "0644"}]}):
        with pytest.raises(SystemExit):
            files.main()
    result = json.loads(capsys.readouterr().out)
    assert result["changed_files"] == [kept, gone]
    assert sorted(os.listdir(tmp_path)) == ["celery-a.conf", "nginx.conf"]


def test_a_link_to_a_directory_gets_its_target_s_attributes(tmp_path, capsys):
    release = tmp_path / "releases" / "r1"
    release.mkdir(parents=True)
    os.chmod(release, 0o755)
    link = tmp_path / "app"
    link.symlink_to(release)
    result = run(capsys, [{"dest": str(link), "state": "directory", "mode": "0750"}])
    assert result["changed_files"] == [str(link)] and link.is_symlink() and mode_of(release) == 0o750
    assert run(capsys, [{"dest": str(link), "state": "directory", "mode": "0750"}])["changed"] is False


INCLUDES = ["include /etc/redis/redis.d/restart.conf", "include /etc/redis/redis.d/users.conf"]


def test_lines_are_appended_once_and_the_rest_is_kept(tmp_path, capsys):
    dest = str(tmp_path / "redis.conf")
    open(dest, "w").write("# packaged\nport 6379\r\ninclude /etc/redis/redis.d/users.conf")  # no final newline
    entry = {"dest": dest, "state": "lines", "lines": INCLUDES + [INCLUDES[0]], "mode": "0640"}
    first = run(capsys, [entry], diff=True)
    assert first["changed_files"] == [dest]
    # The line already there stays where it is; the missing one goes at the end, once.
    expected = "# packaged\nport 6379\r\ninclude /etc/redis/redis.d/users.conf\ninclude /etc/redis/redis.d/restart.conf\n"
    assert open(dest, newline="").read() == expected
    assert first["diff"][0]["before"].startswith("# packaged") and "restart.conf" not in first["diff"][0]["before"]
    assert first["diff"][0]["after"].endswith("restart.conf\n") and mode_of(dest) == 0o640
    second = run(capsys, [entry])
    assert second["changed"] is False


def test_lines_in_check_mode_change_nothing(tmp_path, capsys):
    dest = str(tmp_path / "redis.conf")
    open(dest, "w").write("port 6379\n")
    os.chmod(dest, 0o640)
    result = run(capsys, [{"dest": dest, "state": "lines", "lines": INCLUDES, "mode": "0640"}], check=True)
    assert result["changed_files"] == [dest] and open(dest).read() == "port 6379\n"


def test_lines_need_an_existing_file_and_lines(tmp_path, capsys):
    missing = run(capsys, [{"dest": str(tmp_path / "none"), "state": "lines", "lines": INCLUDES, "mode": "0640"}])
    assert missing["rc_exit"] == 1 and "there is none" in missing["msg"]
    dest = str(tmp_path / "f")
    open(dest, "w").write("x\n")
    empty = run(capsys, [{"dest": dest, "state": "lines", "lines": [], "mode": "0640"}])
    assert empty["rc_exit"] == 1 and "needs lines" in empty["msg"]


def test_lines_validate_before_they_replace(tmp_path, capsys):
    dest = str(tmp_path / "f")
    open(dest, "w").write("good\n")
    os.chmod(dest, 0o644)
    result = run(capsys, [{"dest": dest, "state": "lines", "lines": ["bad"], "mode": "0644",
                           "validate": "/bin/sh -c '! grep -qx bad %s'"}])
    assert result["rc_exit"] == 1 and open(dest).read() == "good\n"
