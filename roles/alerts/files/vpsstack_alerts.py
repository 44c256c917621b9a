"""Sends the audit's WARN/FAIL lines of this host to a webhook (and/or by mail): once per condition per repeat
interval, and once when a condition clears. Run by vpsstack-alerts.service, which a systemd timer starts.

Input: one argument, the path of a JSON config (0600 root: it holds the Redis password, and the webhook URL, which
for Slack is a secret itself). It runs the audit's own code (plugins/module_utils/vpsstack_audit.py, installed
beside this one) with the spec the audit role computes: the spec base64 in argv, the Redis password on stdin.
A condition is an audit line's check name at a status (WARN or FAIL); the state file (under /var/lib) keeps, per
channel (webhook, mail) and condition, its status and when it was last sent. Lines that need the whole inventory
(more than one beat) are the playbook audit's: this script sees one host.
Exit status: 0 when everything due was delivered (or nothing was due), 1 when a delivery failed (that channel's
state is then not advanced, so the next run sends again by it; the channels that delivered move on).
"""
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

RANK = {"OK": 0, "WARN": 1, "FAIL": 2}
# One deadline for a whole run, the audit (audit_timeout, 120 s) and every send together, under the unit's
# TimeoutStartSec (300 s): a run held up by a slow webhook and a slow MTA still ends by itself, says which channel
# failed and keeps the state of those that delivered, where systemd's kill would keep none.
RUN_TIMEOUT_S = 240
MAIL_TIMEOUT_S = 60


def run_audit(config):
    """The audit script's lines; a script that cannot run is itself a FAIL line (an alert, not silence)."""
    spec = base64.b64encode(json.dumps(config["spec"]).encode()).decode()
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    try:
        # -I: the audit gets the Redis password; nothing from its working directory or PYTHONPATH is imported.
        proc = subprocess.run([sys.executable, "-I", config["audit_script"], spec],
                              input=config.get("redis_password", "") + "\n", capture_output=True, text=True,
                              timeout=config.get("audit_timeout", 120), env=env, check=False)
        if proc.returncode != 0:
            return [["FAIL", "audit script", "exit %d: %s" % (proc.returncode, proc.stderr.strip()[-300:])]]
        return json.loads(proc.stdout)["lines"]
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        return [["FAIL", "audit script", "%s: %s" % (type(exc).__name__, exc)]]


def decide(lines, state, now, repeat, min_status="WARN", notify_cleared=True):
    """What to send now, and the state to keep once it is sent.

    A condition is sent when it is new, when its status changed, or when it was last sent repeat seconds ago or
    more; a condition of the state that is no longer there is sent once as cleared (status OK).
    """
    current = {}
    for status, check, detail in lines:
        if RANK[status] >= RANK[min_status] and RANK[status] > RANK[current.get(check, ("OK", ""))[0]]:
            current[check] = (status, detail)
    due, kept = [], {}
    for check, (status, detail) in sorted(current.items()):
        before = state.get(check)
        if before and before["status"] == status and now - before["sent"] < repeat:
            kept[check] = before
            continue
        change = "new" if not before else "changed" if before["status"] != status else "repeat"
        due.append({"status": status, "check": check, "detail": detail, "change": change})
        kept[check] = {"status": status, "sent": now, "since": before["since"] if before else now}
    for check in sorted(set(state) - set(current)):
        if notify_cleared:
            due.append({"status": "OK", "check": check, "detail": "cleared (was %s)" % state[check]["status"],
                        "change": "cleared"})
    return due, kept


def message(host, due):
    text = "vpsstack alerts on %s:\n" % host + "\n".join(
        "%-4s  %s: %s" % (d["status"], d["check"], d["detail"]) for d in due)
    return {"text": text, "host": host, "alerts": due}


class RefuseRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is an HTTPError: urllib would follow 301/302/303 as a GET without the body (the alert lost,
    the run counted as delivered), and a webhook that moved is fixed in alerts_webhook_url, not chased."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def post(url, body, timeout):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(RefuseRedirect)
    with opener.open(request, timeout=timeout) as response:  # noqa: S310 (the URL is the operator's)
        return response.status


def mail(config, body, timeout):
    worst = max((d["status"] for d in body["alerts"]), key=RANK.get)
    text = "To: %s\nFrom: %s\nSubject: [vpsstack %s] %s\n\n%s\n" % (
        ", ".join(config["email_to"]), config["email_from"], worst, body["host"], body["text"])
    proc = subprocess.run([config["sendmail"], "-t", "-oi"], input=text, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise OSError("sendmail exit %d: %s" % (proc.returncode, proc.stderr.strip()[-300:]))


def channels(config):
    """The channels configured. Each keeps its own state: one that cannot deliver sends again on the next run,
    without making the others send again what they delivered."""
    return [name for name, key in (("webhook", "webhook_url"), ("mail", "email_to")) if config.get(key)]


def deliver(config, channel, body, deadline):
    """Send body by one channel within what is left of the run (time.monotonic() deadline): None, or the error,
    with no URL in it (a Slack URL is a secret). The webhook's timeout is urllib's, per socket operation."""
    left = deadline - time.monotonic()
    if left <= 0:
        return "%s: no time left in this run, not tried" % channel
    if channel == "mail":
        try:
            mail(config, body, min(MAIL_TIMEOUT_S, left))
        except (OSError, subprocess.SubprocessError) as exc:
            return "mail: %s" % exc
        return None
    try:
        post(config["webhook_url"], body, min(config.get("http_timeout", 10), left))
    except urllib.error.HTTPError as exc:
        moved = " (a redirect, not followed: put the final URL in alerts_webhook_url)" if exc.code < 400 else ""
        return "webhook: HTTP %s%s" % (exc.code, moved)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return "webhook: %s" % getattr(exc, "reason", exc)
    except http.client.HTTPException as exc:
        # A reply that is not HTTP (BadStatusLine, IncompleteRead, ...): not an OSError, and no reason to crash
        # before the state is written.
        return "webhook: %s: %s" % (type(exc).__name__, str(exc).strip()[:200])
    return None


def prometheus_textfile(path, host, lines, now):
    """The audit's lines for node_exporter's textfile collector: 0 OK, 1 WARN, 2 FAIL (docs/alerts.md)."""
    def quoted(value):
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    out = ["# HELP vpsstack_audit_status Audit line status on this host: 0 OK, 1 WARN, 2 FAIL.",
           "# TYPE vpsstack_audit_status gauge"]
    worst = {}
    for status, check, _detail in lines:
        worst[check] = max(worst.get(check, 0), RANK[status])
    out += ['vpsstack_audit_status{host="%s",check="%s"} %d' % (quoted(host), quoted(c), s)
            for c, s in sorted(worst.items())]
    out += ["# HELP vpsstack_audit_last_run_timestamp_seconds When the alerts timer last ran the audit.",
            "# TYPE vpsstack_audit_last_run_timestamp_seconds gauge",
            'vpsstack_audit_last_run_timestamp_seconds{host="%s"} %d' % (quoted(host), now)]
    write_atomic(path, "\n".join(out) + "\n", 0o644)


def write_atomic(path, text, mode):
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(handle, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_state(path, names):
    """{channel: {check: ...}} for the channels configured. A file from before each channel had its own state
    (the conditions at the top level) counts for every channel: the upgrade sends nothing twice."""
    try:
        with open(path) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = {}
    per_channel = state["channels"] if "channels" in state else {name: state for name in names}
    return {name: per_channel.get(name, {}) for name in names}


def main():
    with open(sys.argv[1]) as fh:
        config = json.load(fh)
    deadline = time.monotonic() + config.get("run_timeout", RUN_TIMEOUT_S)
    now = int(time.time())
    lines = run_audit(config)
    for status, check, detail in lines:
        if status != "OK":
            print("%-4s  %s: %s" % (status, check, detail))
    if config.get("textfile"):
        prometheus_textfile(config["textfile"], config["host"], lines, now)
    names = channels(config)
    state = load_state(config["state_file"], names)
    errors, sent = [], set()
    for name in names:
        due, kept = decide(lines, state[name], now, config["repeat_interval"], config.get("min_status", "WARN"),
                           config.get("notify_cleared", True))
        error = deliver(config, name, message(config["host"], due), deadline) if due else None
        if error:
            errors.append(error)  # this channel's state stays as it was: it sends again on the next run
        else:
            state[name] = kept
            sent.update(d["check"] for d in due)
    write_atomic(config["state_file"], json.dumps({"channels": state}), 0o600)
    print("%d audit lines, %d not OK, %d sent" % (len(lines), sum(s != "OK" for s, _c, _d in lines), len(sent)))
    if errors:
        print("not delivered, sent again on the next run: " + "; ".join(errors), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
