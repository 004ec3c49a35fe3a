#!/usr/bin/env python3
"""Test-side renderer: NixOS-shaped unit descriptions -> systemd unit files.

Input is the JSON of the module's pure render (`nix/render.nix`), i.e. an object
`{ "plan": {...}, "units": { "services": {NAME: SVC}, "timers": {NAME: TIMER} } }` where SVC and
TIMER use the option names of NixOS's `systemd.services.<name>` / `systemd.timers.<name>`
(description, after, wants, onFailure, unitConfig, serviceConfig, timerConfig, environment, path,
script, startAt, restartIfChanged, wantedBy, ...).

The output is a directory tree to be copied over `/` of the test machine:
  etc/systemd/system/NAME.service, NAME.timer, TARGET.wants/NAME.timer -> ../NAME.timer, ...
  <script-prefix>/unit-script-NAME-start/bin/NAME-start        (for `script`, `preStart`, ...)
  <plan-path>                                                  (the plan, if --plan-path)
  hook scripts, /etc/tmpfiles.d/hwc-backup.conf, /etc/ssh/authorized_keys.d/USER (extra_files)

It follows NixOS's rules (nixos/lib/systemd-lib.nix, nixos/modules/system/boot/systemd.nix,
summarised in shared/nix-facts.md section 1.4):
  * [Unit] is `unitConfig` plus the list options (requires, wants, after, ... space-joined, only
    when non-empty), Description (omitted when empty), Documentation, OnFailure/OnSuccess,
    StartLimitBurst/StartLimitIntervalSec (only when given);
  * [Service] starts with the Environment= lines (sorted by name, value JSON-quoted; PATH is always
    set, from `path` plus the default packages: the input's `defaultPath` (tests/systemd gives the
    fake store's coreutils, findutils, gnugrep, gnused and systemd), else Debian's /usr/local,
    /usr and /), then the
    X-ReloadIfChanged=true / X-RestartIfChanged=false / X-StopIfChanged=false /
    X-NotSocketActivated=true markers, then `serviceConfig`;
  * keys inside a section are in alphabetical order (Nix attribute sets are sorted), a list value
    becomes one `Key=item` line per element, true/false are written as `true`/`false`, null as `Key=`;
  * [Install] WantedBy= (space-joined) when `wantedBy` is non-empty; the enablement itself is the
    `TARGET.wants/` symlink (NixOS builds /etc/systemd/system with those links; it never runs
    `systemctl enable`); requiredBy -> .requires/, upheldBy -> .upholds/, aliases -> symlinks;
  * `script`/`preStart`/`postStart`/`reload`/`preStop`/`postStop` become bash job scripts
    (`#!/bin/bash`, `set -e`, the text) referenced from ExecStart/ExecStartPre/ExecStartPost/
    ExecReload/ExecStop/ExecStopPost; `scriptArgs` is appended to ExecStart;
  * `startAt` (string or list) creates a timer of the same name with `wantedBy = timers.target` and
    `OnCalendar = startAt`, merged with an explicit timer of that name by the `unitOption` merge rule
    (if either definition is a list they are concatenated, otherwise they must be equal);
  * `enable = false` masks the unit (symlink to /dev/null).
"""

import argparse
import json
import os
import re
import sys

UNIT_NAME_RE = re.compile(r"^[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)$")

LIST_OPTIONS = [  # option name -> [Unit] key, space-joined
    ("requires", "Requires"), ("wants", "Wants"), ("upholds", "Upholds"), ("after", "After"),
    ("before", "Before"), ("bindsTo", "BindsTo"), ("partOf", "PartOf"), ("conflicts", "Conflicts"),
    ("requisite", "Requisite"),
]

KNOWN_COMMON = {
    "enable", "name", "overrideStrategy", "wantedBy", "requiredBy", "upheldBy", "aliases",
    "description", "documentation", "onFailure", "onSuccess", "unitConfig", "startLimitBurst",
    "startLimitIntervalSec", "restartTriggers", "reloadTriggers",
} | {o for o, _ in LIST_OPTIONS}
KNOWN_SERVICE = KNOWN_COMMON | {
    "environment", "path", "serviceConfig", "script", "scriptArgs", "preStart", "postStart",
    "reload", "preStop", "postStop", "restartIfChanged", "reloadIfChanged", "stopIfChanged",
    "notSocketActivated", "startAt", "enableStrictShellChecks",
}
KNOWN_TIMER = KNOWN_COMMON | {"timerConfig"}

# Debian's equivalent of the packages NixOS always appends to a service's `path`
# (coreutils, findutils, gnugrep, gnused, systemd).
DEFAULT_PATH_PREFIXES = ["/usr/local", "/usr", ""]

SCRIPT_HOOKS = [  # option -> (serviceConfig key, job-script suffix, is list)
    ("preStart", "ExecStartPre", "pre-start", True),
    ("postStart", "ExecStartPost", "post-start", True),
    ("reload", "ExecReload", "reload", False),
    ("preStop", "ExecStop", "pre-stop", False),
    ("postStop", "ExecStopPost", "post-stop", False),
]


class RenderError(Exception):
    pass


def to_value(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return ""
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return v
    raise RenderError(f"cannot render value {v!r} into a unit file")


def attrs_to_section(attrs):
    out = []
    for key in sorted(attrs):
        val = attrs[key]
        for item in (val if isinstance(val, list) else [val]):
            out.append(f"{key}={to_value(item)}\n")
    return "".join(out)


def merge_unit_option(key, a, b):
    """NixOS `unitOption` merge of two definitions of one key."""
    if isinstance(a, list) or isinstance(b, list):
        return (a if isinstance(a, list) else [a]) + (b if isinstance(b, list) else [b])
    if a != b:
        raise RenderError(f"conflicting definition values for {key}: {a!r} vs {b!r}")
    return a


def merge_attrs(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_unit_option(k, out[k], v) if k in out else v
    return out


def check_unit_names(where, names):
    for n in names:
        if not isinstance(n, str) or not UNIT_NAME_RE.match(n):
            raise RenderError(f"{where}: {n!r} is not a unit name with a suffix (NixOS unitNameType)")


def unit_section(name, kind, d):
    cfg = dict(d.get("unitConfig") or {})
    extra = {}
    for opt, key in LIST_OPTIONS:
        vals = d.get(opt) or []
        check_unit_names(f"{name}.{kind}: {opt}", vals)
        if vals:
            extra[key] = " ".join(vals)
    if d.get("description"):
        if "\n" in d["description"]:
            raise RenderError(f"{name}.{kind}: description must be a single line")
        extra["Description"] = d["description"]
    if d.get("documentation"):
        extra["Documentation"] = " ".join(d["documentation"])
    for opt, key in (("onFailure", "OnFailure"), ("onSuccess", "OnSuccess")):
        vals = d.get(opt) or []
        check_unit_names(f"{name}.{kind}: {opt}", vals)
        if vals:
            extra[key] = " ".join(vals)
    for opt, key in (("startLimitBurst", "StartLimitBurst"), ("startLimitIntervalSec", "StartLimitIntervalSec")):
        if d.get(opt) is not None:
            extra[key] = str(d[opt])
    if d.get("restartTriggers"):
        extra["X-Restart-Triggers"] = "hwc-test-restart-triggers-" + name
    if d.get("reloadTriggers"):
        extra["X-Reload-Triggers"] = "hwc-test-reload-triggers-" + name
    return merge_attrs(extra, cfg)


def install_section(d):
    wb = d.get("wantedBy") or []
    return "\n[Install]\nWantedBy=" + " ".join(wb) + "\n" if wb else ""


def job_script(name, text, script_prefix, files):
    script_name = name.replace("\\", "-").replace("@", "_")
    rel = f"unit-script-{script_name}/bin/{script_name}"
    path = f"{script_prefix.rstrip('/')}/{rel}"
    files[path] = ("#!/bin/bash\nset -e\n" + text + "\n", 0o755)
    return path


def render_service(name, d, script_prefix, files, default_path=None):
    unknown = set(d) - KNOWN_SERVICE
    if unknown:
        raise RenderError(f"{name}.service: unknown option(s) {sorted(unknown)}")
    sc = dict(d.get("serviceConfig") or {})
    if sc.get("Type") not in (None, "exec", "simple", "forking", "oneshot", "dbus", "notify", "notify-reload", "idle"):
        raise RenderError(f"{name}.service: bad Type {sc.get('Type')!r}")
    if sc.get("Restart") not in (None, "no", "on-success", "on-failure", "on-abnormal", "on-abort", "always"):
        raise RenderError(f"{name}.service: bad Restart {sc.get('Restart')!r}")
    if d.get("script"):
        start = job_script(f"{name}-start", d["script"], script_prefix, files)
        args = d.get("scriptArgs") or ""
        sc = merge_attrs(sc, {"ExecStart": start + " " + args})
    for opt, key, suffix, is_list in SCRIPT_HOOKS:
        if d.get(opt):
            p = job_script(f"{name}-{suffix}", d[opt], script_prefix, files)
            sc = merge_attrs(sc, {key: [p] if is_list else p})

    path = list(d.get("path") or [])
    env = dict(d.get("environment") or {})
    if "PATH" not in env:
        defaults = DEFAULT_PATH_PREFIXES if default_path is None else list(default_path)
        bins = [f"{p}/bin" for p in path] + [f"{p}/bin" for p in defaults]
        sbins = [f"{p}/sbin" for p in path] + [f"{p}/sbin" for p in defaults]
        env["PATH"] = ":".join(bins) + ":" + ":".join(sbins)
    text = "[Unit]\n" + attrs_to_section(unit_section(name, "service", d)) + "\n[Service]\n"
    for k in sorted(env):
        v = env[k]
        if v is None:
            continue
        if not isinstance(v, str):
            raise RenderError(f"{name}.service: environment.{k} must be a string, not {v!r} (NixOS rejects ints)")
        text += "Environment=" + json.dumps(f"{k}={v}") + "\n"
    if d.get("reloadIfChanged"):
        text += "X-ReloadIfChanged=true\n"
    elif d.get("restartIfChanged", True) is False:
        text += "X-RestartIfChanged=false\n"
    if d.get("stopIfChanged", True) is False:
        text += "X-StopIfChanged=false\n"
    if d.get("notSocketActivated"):
        text += "X-NotSocketActivated=true\n"
    text += attrs_to_section(sc)
    text += install_section(d)
    return text


def render_timer(name, d):
    unknown = set(d) - KNOWN_TIMER
    if unknown:
        raise RenderError(f"{name}.timer: unknown option(s) {sorted(unknown)}")
    text = "[Unit]\n" + attrs_to_section(unit_section(name, "timer", d))
    text += "\n[Timer]\n" + attrs_to_section(d.get("timerConfig") or {})
    text += install_section(d)
    return text


def merge_timer_defs(a, b):
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif k == "timerConfig" or k == "unitConfig":
            out[k] = merge_attrs(out[k], v)
        elif isinstance(v, list):
            out[k] = list(out[k]) + [x for x in v if x not in out[k]]
        elif out[k] != v:
            raise RenderError(f"timer option {k}: conflicting definition values")
    return out


def render(doc, script_prefix="/opt/hwc-units"):
    """Return {path: (content, mode)} for files and {path: target} for symlinks, paths absolute."""
    units = doc.get("units") or {}
    services = units.get("services") or {}
    timers = {k: dict(v) for k, v in (units.get("timers") or {}).items()}
    for name, svc in services.items():
        start_at = svc.get("startAt")
        if start_at in (None, [], ""):
            continue
        if svc.get("enable", True) is False:
            continue
        start_at = start_at if isinstance(start_at, list) else [start_at]
        implied = {"wantedBy": ["timers.target"], "timerConfig": {"OnCalendar": start_at}}
        timers[name] = merge_timer_defs(implied, timers.get(name, {}))

    files, links = {}, {}
    unit_dir = "/etc/systemd/system"
    for kind, defs in (("service", services), ("timer", timers)):
        for name in sorted(defs):
            d = defs[name]
            fname = f"{name}.{kind}"
            if not UNIT_NAME_RE.match(fname):
                raise RenderError(f"bad unit name {fname!r}")
            if d.get("enable", True) is False:
                links[f"{unit_dir}/{fname}"] = "/dev/null"
                continue
            text = (render_service(name, d, script_prefix, files, doc.get("defaultPath")) if kind == "service"
                    else render_timer(name, d))
            files[f"{unit_dir}/{fname}"] = (text, 0o644)
            for opt, suffix in (("wantedBy", "wants"), ("requiredBy", "requires"), ("upheldBy", "upholds")):
                tgts = d.get(opt) or []
                check_unit_names(f"{fname}: {opt}", tgts)
                for t in tgts:
                    links[f"{unit_dir}/{t}.{suffix}/{fname}"] = f"../{fname}"
            for alias in d.get("aliases") or []:
                links[f"{unit_dir}/{alias}"] = fname
    return files, links


USER_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def extra_files(doc):
    """What the module adds besides units: hook scripts (`files`: path -> text, executable, as
    pkgs.writeShellScript makes them), `tmpfiles` rules (systemd.tmpfiles.rules), and the agent's
    `authorizedKeys` (user -> lines, users.users.<user>.openssh.authorizedKeys.keys), which
    NixOS's sshd module writes to /etc/ssh/authorized_keys.d/<user>, mode 0444, one key a line."""
    out = {}
    for path, text in (doc.get("files") or {}).items():
        if not path.startswith("/"):
            raise RenderError(f"file path {path!r} is not absolute")
        out[path] = (text, 0o755)
    if doc.get("tmpfiles"):
        out["/etc/tmpfiles.d/hwc-backup.conf"] = ("".join(r + "\n" for r in doc["tmpfiles"]), 0o644)
    for user, keys in sorted((doc.get("authorizedKeys") or {}).items()):
        if not USER_NAME_RE.match(user):
            raise RenderError(f"authorizedKeys: {user!r} is not a user name")
        if any("\n" in k or "\r" in k for k in keys):
            raise RenderError(f"authorizedKeys.{user}: an entry spans several lines")
        if keys:
            out[f"/etc/ssh/authorized_keys.d/{user}"] = ("".join(k + "\n" for k in keys), 0o444)
    return out


def write_tree(root, files, links):
    for path, (content, mode) in files.items():
        dst = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as f:
            f.write(content)
        os.chmod(dst, mode)
    for path, target in links.items():
        dst = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.lexists(dst):
            os.unlink(dst)
        os.symlink(target, dst)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("render_json", help="output of nix-instantiate --eval --strict --json on the render ('-' = stdin)")
    ap.add_argument("out", help="directory to write the tree into (copied over / of the test machine)")
    ap.add_argument("--script-prefix", default="/opt/hwc-units")
    ap.add_argument("--plan-path", default=None, help="also write doc.plan as JSON to this absolute path")
    a = ap.parse_args(argv)
    doc = json.load(sys.stdin if a.render_json == "-" else open(a.render_json))
    try:
        files, links = render(doc, a.script_prefix)
    except RenderError as e:
        print(f"render_units: {e}", file=sys.stderr)
        return 1
    if doc.get("failedAssertions"):
        print("render_units: the configuration fails the module's assertions:\n  " +
              "\n  ".join(doc["failedAssertions"]), file=sys.stderr)
        return 1
    if a.plan_path:
        files[a.plan_path] = (json.dumps(doc["plan"], indent=2, sort_keys=True) + "\n", 0o644)
    files.update(extra_files(doc))
    write_tree(a.out, files, links)
    return 0


if __name__ == "__main__":
    sys.exit(main())
