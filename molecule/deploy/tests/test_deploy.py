"""Releases and the rolling deploy, live: v1 converged, v2 deployed while tasks run, rollback, pruning, no-op.

Tests run in file order and build on each other (one host, one sequence of deploys). The deploys are real
`ansible-playbook playbooks/deploy.yml` runs against molecule's inventory, as a user would start them.
"""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "shared"))
from live import scenario_hosts, wait_for  # noqa: E402

testinfra_hosts = scenario_hosts("all")

PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
FILES = os.path.join(PROJECT, "molecule", "deploy", "files")
RELEASES = "/opt/celery/releases"
APP = "/opt/celery/app"
KEEP = 3  # molecule.yml: worker_releases_keep
ENV = ("runuser -u celery -- env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/etc/celery:/opt/celery/app "
       "CELERY_CONFIG_MODULE=vpsstack_celery_settings /opt/celery/venv/bin/python -m relapp.client")
CLIENT = f"cd {APP} && {ENV}"
# What the tests learn on the way (release ids), shared between the ordered tests.
SEEN = {}


def deploy_argv(*extra, check=False):
    """The deploy playbook against the scenario's host, as a user runs it; (argv, env)."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="false")
    env.pop("ANSIBLE_CALLBACK_RESULT_FORMAT", None)
    if "ANSIBLE_CONFIG" not in env and os.path.exists(os.path.join(EPHEMERAL, "ansible.cfg")):
        env["ANSIBLE_CONFIG"] = os.path.join(EPHEMERAL, "ansible.cfg")
    argv = ["ansible-playbook", "-i", os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]),
            os.path.join(PROJECT, "playbooks", "deploy.yml")] + list(extra) + (["--check"] if check else [])
    return argv, env


def outcome(proc, stdout, stderr):
    """(rc, the host's stats with the names of the tasks that changed, the output's tail)."""
    try:
        stats = json.loads(stdout)["stats"].get("vpsstack-deploy", {})
    except (ValueError, KeyError):
        stats = {}
    return proc.returncode, dict(stats, changed_tasks=changed_tasks(stdout)), stdout[-6000:] + stderr[-3000:]


def deploy(*extra, check=False):
    """Run the deploy playbook; return (rc, stats of the host, seconds, output)."""
    argv, env = deploy_argv(*extra, check=check)
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    rc, stats, output = outcome(proc, proc.stdout, proc.stderr)
    return rc, stats, time.monotonic() - started, output


def changed_tasks(output):
    """Names of the tasks that reported changed, from the json callback's output."""
    try:
        plays = json.loads(output[output.index("{"):output.rindex("}") + 1])["plays"]
    except ValueError:
        return []
    return [t["task"]["name"] for p in plays for t in p["tasks"]
            if any(h.get("changed") for h in t["hosts"].values())]


def current(host):
    return host.check_output(f"readlink {APP}")


def releases(host):
    return sorted(host.check_output(f"ls -1 {RELEASES}").split())


def version(host):
    return json.loads(host.check_output(f"{CLIENT} version"))


def pids(host):
    return host.check_output("supervisorctl pid celery-default celery-beat").split()


def test_v1_runs_from_a_release_behind_the_link(host):
    assert host.file(APP).is_symlink
    target = current(host)
    assert target.startswith(RELEASES + "/src-"), target
    assert host.file(APP + "/relapp/only_in_v1.py").exists
    assert version(host) == "v1"
    # The release tree belongs to root: the tasks cannot rewrite the code they run; other users read none of it.
    tasks = host.file(target + "/relapp/tasks.py")
    assert host.file(target).user == "root" and (tasks.user, tasks.group, tasks.mode) == ("root", "celery", 0o640)
    releases_dir = host.file(RELEASES)
    assert (releases_dir.user, releases_dir.group, releases_dir.mode) == ("root", "celery", 0o750)
    SEEN["v1"] = os.path.basename(target)


def test_io_group_runs_the_children_its_measured_app_leaves_room_for(host):
    """The settings check measured the app (app_kib) and what a fork of it keeps sharing (shared_kib); the same
    converge sized the IO-bound group from them instead of the costs' 100 MB per child (465 MB for children on this
    1 GB host with Redis and beat: 4 of those). What each running child holds alone fits its planned size, and its
    RSS (shared pages included, what billiard compares) stays below its recycle limit."""
    fact = json.loads(host.file("/etc/ansible/facts.d/vpsstack_worker.fact").content_string)
    child_mb = fact["child_mb"]["default"]
    assert 0 < fact["shared_kib"] < fact["app_kib"], fact
    command = host.file("/etc/supervisor/conf.d/celery-default.conf").content_string.split("command=", 1)[1]
    argv = command.split("\n", 1)[0].split()
    concurrency = int(argv[argv.index("--concurrency") + 1])
    limit_kib = int(argv[argv.index("--max-memory-per-child") + 1])
    assert child_mb * 1024 < fact["app_kib"] < limit_kib and concurrency > 4, (child_mb, concurrency, limit_kib)
    parent = host.check_output("supervisorctl pid celery-default")
    children = host.check_output(f"pgrep -P {parent}").split()
    assert len(children) == concurrency
    rss = [int(host.check_output(f"awk '/^VmRSS/{{print $2}}' /proc/{pid}/status")) for pid in children]
    # smaps_rollup needs ptrace rights: the children's own user has them in a container, root has not.
    alone = [int(host.check_output(f"runuser -u celery -- awk '/^Private/{{n += $2}} END {{print n}}' "
                                   f"/proc/{pid}/smaps_rollup")) for pid in children]
    assert max(rss) < limit_kib and max(alone) < child_mb * 1024, (rss, alone, limit_kib)
    print("io group: app %d KiB (%d shared by a fork), child %d MB, %d children, RSS %s KiB, alone %s KiB, "
          "recycle at %d KiB" % (fact["app_kib"], fact["shared_kib"], child_mb, concurrency, rss, alone, limit_kib))


def test_deploy_v2_while_tasks_run_loses_nothing(host):
    # Old releases to prune: three older than v1 (by their switch time), so keep=3 leaves v2, v1 and one of them.
    for day, name in enumerate(["src-old1", "src-old2", "src-old3"], start=1):
        host.check_output(f"mkdir -p {RELEASES}/{name} && touch -d '2020-01-0{day}' {RELEASES}/{name}")
    report, stop = "/tmp/deploy-stream.json", "/tmp/deploy-stream.stop"
    host.check_output(f"rm -f {report} {stop}")
    argv, env = deploy_argv("-e", f"worker_app_src={FILES}/v2/")
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Tasks start flowing when the link moves (the restarts follow within seconds): one task of 1.5 s every
    # second on 2 children, so tasks run and wait in the queue through every restart of the deploy.
    swapped = wait_for(lambda: current(host) != RELEASES + "/" + SEEN["v1"] or proc.poll() is not None, 600, 0.5)
    swap_s = time.monotonic() - started
    assert swapped and proc.poll() is None, "the deploy ended before the link moved"
    host.check_output(f"cd {APP} && nohup {ENV} stream deploy-v2 1 1.5 {stop} {report} >/tmp/stream.log 2>&1 &")
    stdout, stderr = proc.communicate(timeout=900)
    seconds = time.monotonic() - started
    rc, stats, output = outcome(proc, stdout, stderr)
    assert rc == 0, output
    time.sleep(3)  # a few tasks after the last restart too
    host.check_output(f"touch {stop}")
    assert wait_for(lambda: host.file(report).exists, 360, 2), host.check_output("cat /tmp/stream.log")
    result = json.loads(host.file(report).content_string)
    print(f"\ndeploy v2 under load: {seconds:.0f} s in all, link moved after {swap_s:.0f} s, "
          f"changed {stats.get('changed')}; tasks sent from the swap on: {result}")
    assert result["lost"] == 0 and result["completed"] == result["sent"], result
    assert result["duplicates"] == 0, result
    assert result["versions"].get("v2", 0) > 0, result
    assert version(host) == "v2"
    target = current(host)
    assert target.startswith(RELEASES + "/src-")
    SEEN["v2"] = os.path.basename(target)
    # Removed from the source: gone from the release in use; the old release is kept for a rollback.
    assert not host.file(APP + "/relapp/only_in_v1.py").exists
    assert host.file(f"{RELEASES}/{SEEN['v1']}/relapp/only_in_v1.py").exists
    # keep 3: v2 (in use), v1, and the newest of the old ones.
    assert releases(host) == sorted([SEEN["v1"], SEEN["v2"], "src-old3"]), releases(host)


def test_rollback_to_a_kept_release(host):
    before = pids(host)
    rc, stats, seconds, output = deploy("-e", f"worker_release={SEEN['v1']}", "-e", f"worker_app_src={FILES}/v2/")
    assert rc == 0, output
    print(f"\nrollback to v1: {seconds:.0f} s, changed {stats.get('changed')}")
    assert current(host) == RELEASES + "/" + SEEN["v1"]
    assert version(host) == "v1"
    assert host.file(APP + "/relapp/only_in_v1.py").exists
    after = pids(host)
    assert all(a != b for a, b in zip(before, after)), (before, after)
    # v2 stays (the release before), src-old3 is the oldest now and goes: keep 3 counts switch time.
    assert releases(host) == sorted([SEEN["v1"], SEEN["v2"], "src-old3"]), releases(host)


def test_rollback_to_a_release_that_is_not_kept_fails_and_changes_nothing(host):
    before = pids(host)
    rc, _stats, _seconds, output = deploy("-e", "worker_release=src-nothere")
    assert rc != 0
    assert "worker_release=src-nothere is not a release kept on vpsstack-deploy" in output, output
    assert current(host) == RELEASES + "/" + SEEN["v1"]
    assert pids(host) == before


def test_a_restart_an_interrupted_run_never_made_happens_on_the_next_run(host):
    # What a deploy leaves when it fails or is stopped after it switched the release link and wrote a program file,
    # before its handlers: both newer than the running programs, and nothing left for the next run to change.
    before = pids(host)
    host.check_output(f"touch -h {APP} /etc/supervisor/conf.d/celery-default.conf")
    stale = "vpsstack.celery.worker : Restart the programs that started before their files last changed"
    rc, stats, _seconds, output = deploy(check=True)
    assert rc == 0, output
    assert stats["changed_tasks"] == [stale] and pids(host) == before
    rc, stats, _seconds, output = deploy()
    assert rc == 0, output
    assert stale in stats["changed_tasks"], stats
    assert not set(pids(host)) & set(before)  # every program restarted


def open_files(host, pid):
    return int(host.check_output(f"awk '/^Max open files/ {{print $4}}' /proc/{pid}/limits"))


def test_a_worker_running_with_another_open_file_limit_gets_the_hosts_again(host):
    # What a run leaves when it fails after it changed the limit, before supervisor restarted: workers on the old
    # one. The worker's own user may lower its soft limit (prlimit(2)); a deploy run restarts supervisor.
    pid = host.check_output("supervisorctl pid celery-default")
    limit = open_files(host, pid)
    host.check_output(f"runuser -u celery -- prlimit --pid {pid} --nofile=1024:")
    assert open_files(host, pid) == 1024
    rc, stats, _seconds, output = deploy()
    assert rc == 0, output
    drift = "vpsstack.celery.worker : Restart supervisor for workers that run with another open-file limit"
    assert drift in stats["changed_tasks"], stats
    restarted = host.check_output("supervisorctl pid celery-default")
    assert restarted != pid and open_files(host, restarted) == limit


def test_unchanged_source_changes_nothing(host):
    # The inventory's source is v1, the release in use, and the programs restarted after their files changed: a
    # check run reports nothing to do (a real no-op run: test_what_the_release_leaves_out_neither_ships_nor_restarts).
    before = pids(host)
    rc, stats, _seconds, output = deploy(check=True)
    assert rc == 0, output
    assert stats.get("changed") == 0, stats["changed_tasks"]
    assert pids(host) == before
    assert current(host) == RELEASES + "/" + SEEN["v1"]


def test_keep_n_prunes_the_oldest_and_a_known_source_reuses_its_release(host):
    # v1 runs; one more old release (switched before every other) makes four with v2's.
    host.check_output(f"mkdir -p {RELEASES}/src-old4 && touch -d '2020-01-04' {RELEASES}/src-old4")
    rc, _stats, _seconds, output = deploy("-e", f"worker_app_src={FILES}/v2/")
    assert rc == 0, output
    # v2's source again: its release is reused (same content, same id) and becomes the newest.
    assert current(host) == RELEASES + "/" + SEEN["v2"]
    assert version(host) == "v2"
    # 4 releases, keep 3: the oldest by switch time (src-old3) goes, never the one in use.
    assert releases(host) == sorted([SEEN["v1"], SEEN["v2"], "src-old4"]), releases(host)


# The app loads; a task module it includes (imported only by the worker, before it consumes) raises. The harder of
# the two ways a release fails to load: an app module that raises fails the same check earlier, in the same import.
BROKEN = {"relapp/tasks.py": '\napp.conf.include = ["relapp.more_tasks"]\n',
          "relapp/more_tasks.py": 'raise ImportError("broken on purpose by test_deploy")\n'}


def test_a_release_that_does_not_load_is_not_left_behind_the_link(host, tmp_path):
    """The check (check.yml) fails on a release whose code, or a task module the worker would import, raises:
    the link goes back to the release that ran before, the release built for it is removed, and the programs keep
    running the previous code."""
    before_target, before_pids, before_releases = current(host), pids(host), releases(host)
    before_version = version(host)
    broken = tmp_path / "broken"
    shutil.copytree(os.path.join(FILES, "v1"), broken)
    for rel, text in BROKEN.items():
        with open(broken / rel, "a", encoding="utf-8") as fh:
            fh.write(text)
    rc, _stats, seconds, output = deploy("-e", f"worker_app_src={broken}/")
    print(f"\nbroken release (an included task module raises) refused in {seconds:.0f} s")
    assert rc != 0, output
    assert "does not load" in output and "broken on purpose" in output, output
    assert current(host) == before_target
    assert releases(host) == before_releases
    assert pids(host) == before_pids
    assert version(host) == before_version


def test_a_release_whose_programs_do_not_come_up_is_rolled_back(host, tmp_path):
    """It loads in the settings check, but every program dies at start under supervisor (an environment the project
    relies on, missing): health.yml puts the previous release back, restarts the programs on it, and fails. v1's
    code with another pin: v2 runs before it."""
    before_target, before_releases, before_version = current(host), releases(host), version(host)
    bad = tmp_path / "dies-under-supervisor"
    shutil.copytree(os.path.join(FILES, "v1"), bad)
    with open(bad / "relapp" / "tasks.py", "a", encoding="utf-8") as fh:
        fh.write('\nif os.environ.get("SUPERVISOR_ENABLED"):\n'
                 '    raise RuntimeError("broken on purpose by test_deploy: dies under supervisor")\n')
    # It also moves a dependency: the rollback must put the running release's pin (six 1.17.0) back into the venv.
    (bad / "requirements.txt").write_text("six==1.16.0\n")
    rc, _stats, seconds, output = deploy("-e", f"worker_app_src={bad}/")
    print(f"\nrelease that does not come up rolled back in {seconds:.0f} s")
    assert rc != 0, output
    assert "did not come up" in output and "dies under supervisor" in output, output
    assert current(host) == before_target
    assert releases(host) == before_releases
    assert wait_for(lambda: "RUNNING" in host.check_output("supervisorctl status celery-default"), 60)
    assert version(host) == before_version
    assert "Version: 1.17.0" in host.check_output("/opt/celery/venv/bin/pip show six")


def test_what_the_release_leaves_out_neither_ships_nor_restarts(host, tmp_path):
    """One exclude list for the release id and the copy: a project's .git, virtualenv, node_modules and caches are
    not shipped, and a change there alone (a git fetch) makes no release and restarts nothing. Its .env ships
    private (0640 root:celery)."""
    src = tmp_path / "proj"
    shutil.copytree(os.path.join(FILES, "v1"), src)
    extras = {".env": "SECRET=from-test\n", ".git/HEAD": "ref: refs/heads/main\n", ".venv/pyvenv.cfg": "home = x\n",
              "node_modules/left-pad/index.js": "", "relapp/__pycache__/tasks.cpython-312.pyc": ""}
    for rel, text in extras.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    before = pids(host)
    rc, _stats, _seconds, output = deploy("-e", f"worker_app_src={src}/")
    assert rc == 0, output
    target = current(host)
    assert target != RELEASES + "/" + SEEN["v1"]  # the .env is new content
    listing = host.check_output(f"cd {target} && find . -mindepth 1 | sort").split()
    assert "./.env" in listing and not [p for p in listing if p.startswith(("./.git", "./.venv", "./node_modules"))]
    assert not [p for p in listing if "__pycache__" in p], listing
    env_file = host.file(target + "/.env")
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "celery", 0o640)
    assert host.run(f"runuser -u nobody -- cat {target}/.env").rc != 0
    # A fetch: only .git changes. Same id, nothing changes, nothing restarts.
    (src / ".git" / "FETCH_HEAD").write_text("abc\tbranch 'main'\n")
    moved = pids(host)
    rc, stats, _seconds, output = deploy("-e", f"worker_app_src={src}/")
    assert rc == 0 and stats.get("changed") == 0, stats["changed_tasks"]
    assert pids(host) == moved and current(host) == target and moved != before
    # This release stays current for test_poison.py: a copy of v1, it carries the poison task.
