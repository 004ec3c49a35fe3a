"""Tests of the test-side renderer (render_units.py) against NixOS's rendering rules.

Run: cd tests/systemd && python3 -m unittest -v test_render_units
"""
import os
import shutil
import subprocess
import tempfile
import unittest

import render_units as ru


def svc_text(name, d, prefix="/opt/u"):
    files = {}
    return ru.render_service(name, d, prefix, files), files


class ValueRendering(unittest.TestCase):
    def test_scalars(self):
        self.assertEqual(ru.attrs_to_section({"B": True, "A": False, "C": 3, "D": "x y"}),
                         "A=false\nB=true\nC=3\nD=x y\n")

    def test_list_is_one_line_per_item_and_keys_sorted(self):
        self.assertEqual(ru.attrs_to_section({"ReadWritePaths": ["/a", "/b"], "Nice": 19}),
                         "Nice=19\nReadWritePaths=/a\nReadWritePaths=/b\n")

    def test_null_resets(self):
        self.assertEqual(ru.attrs_to_section({"X": None}), "X=\n")

    def test_nested_attrs_rejected(self):
        with self.assertRaises(ru.RenderError):
            ru.attrs_to_section({"X": {"a": 1}})


class Services(unittest.TestCase):
    def test_layout(self):
        text, _ = svc_text("backup", {
            "description": "Backup", "after": ["local-fs.target", "network.target"],
            "wants": ["network.target"], "onFailure": ["notify@%n.service"],
            "unitConfig": {"RequiresMountsFor": ["/mnt/backup"], "ConditionACPower": True},
            "serviceConfig": {"Type": "oneshot", "ExecStart": "/bin/true", "Nice": 19},
            "environment": {"B": "2", "A": "x \"q\""},
            "restartIfChanged": False, "wantedBy": ["multi-user.target"],
        })
        self.assertEqual(text, (
            "[Unit]\n"
            "After=local-fs.target network.target\n"
            "ConditionACPower=true\n"
            "Description=Backup\n"
            "OnFailure=notify@%n.service\n"
            "RequiresMountsFor=/mnt/backup\n"
            "Wants=network.target\n"
            "\n[Service]\n"
            'Environment="A=x \\"q\\""\n'
            'Environment="B=2"\n'
            'Environment="PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"\n'
            "X-RestartIfChanged=false\n"
            "ExecStart=/bin/true\n"
            "Nice=19\n"
            "Type=oneshot\n"
            "\n[Install]\nWantedBy=multi-user.target\n"))

    def test_empty_description_omitted_and_no_install(self):
        text, _ = svc_text("x", {"serviceConfig": {"ExecStart": "/bin/true"}})
        self.assertNotIn("Description", text)
        self.assertNotIn("[Install]", text)
        self.assertNotIn("X-RestartIfChanged", text)

    def test_path_option(self):
        text, _ = svc_text("x", {"path": ["/p/rclone", "/p/util"], "serviceConfig": {"ExecStart": "/bin/true"}})
        self.assertIn('Environment="PATH=/p/rclone/bin:/p/util/bin:/usr/local/bin:/usr/bin:/bin:'
                      '/p/rclone/sbin:/p/util/sbin:/usr/local/sbin:/usr/sbin:/sbin"\n', text)

    def test_default_path_from_the_input(self):
        # NixOS's defaults (coreutils, …, systemd) given as store directories: nothing of Debian's.
        files = {}
        text = ru.render_service("x", {"path": ["/nix/store/h-util"], "serviceConfig": {"ExecStart": "/bin/true"}},
                                 "/opt/u", files, ["/nix/store/h-coreutils", "/nix/store/h-systemd"])
        self.assertIn('Environment="PATH=/nix/store/h-util/bin:/nix/store/h-coreutils/bin:/nix/store/h-systemd/bin:'
                      '/nix/store/h-util/sbin:/nix/store/h-coreutils/sbin:/nix/store/h-systemd/sbin"\n', text)
        files, _ = ru.render({"defaultPath": ["/nix/store/h-coreutils"],
                              "units": {"services": {"y": {"serviceConfig": {"ExecStart": "/bin/true"}}}}})
        self.assertIn('Environment="PATH=/nix/store/h-coreutils/bin:/nix/store/h-coreutils/sbin"\n',
                      files["/etc/systemd/system/y.service"][0])

    def test_markers(self):
        t1, _ = svc_text("x", {"reloadIfChanged": True, "restartIfChanged": False, "stopIfChanged": False,
                               "notSocketActivated": True})
        self.assertIn("X-ReloadIfChanged=true\nX-StopIfChanged=false\nX-NotSocketActivated=true\n", t1)
        self.assertNotIn("X-RestartIfChanged", t1)  # reloadIfChanged wins, as in NixOS

    def test_script_becomes_job_script(self):
        text, files = svc_text("backup", {"script": "echo hi", "scriptArgs": "%i", "preStart": "echo pre"})
        self.assertIn("ExecStart=/opt/u/unit-script-backup-start/bin/backup-start %i\n", text)
        self.assertIn("ExecStartPre=/opt/u/unit-script-backup-pre-start/bin/backup-pre-start\n", text)
        content, mode = files["/opt/u/unit-script-backup-start/bin/backup-start"]
        self.assertEqual(content, "#!/bin/bash\nset -e\necho hi\n")
        self.assertEqual(mode, 0o755)

    def test_script_conflicts_with_execstart(self):
        with self.assertRaises(ru.RenderError):
            svc_text("x", {"script": "true", "serviceConfig": {"ExecStart": "/bin/false"}})

    def test_bad_type_and_unit_names(self):
        with self.assertRaises(ru.RenderError):
            svc_text("x", {"serviceConfig": {"Type": "oneshott"}})
        with self.assertRaises(ru.RenderError):
            svc_text("x", {"after": ["network-online"]})   # NixOS requires the suffix
        with self.assertRaises(ru.RenderError):
            svc_text("x", {"environment": {"N": 3}})        # NixOS rejects ints
        with self.assertRaises(ru.RenderError):
            svc_text("x", {"bogusOption": 1})

    def test_unitconfig_conflict_with_option(self):
        with self.assertRaises(ru.RenderError):
            svc_text("x", {"after": ["a.target"], "unitConfig": {"After": "b.target"}})
        text, _ = svc_text("x", {"after": ["a.target"], "unitConfig": {"After": ["b.target"]}})
        self.assertIn("After=a.target\nAfter=b.target\n", text)  # list definitions concatenate


class Timers(unittest.TestCase):
    def test_timer_and_links(self):
        files, links = ru.render({"units": {"services": {"b": {"serviceConfig": {"ExecStart": "/bin/true"}}},
                                            "timers": {"b": {"wantedBy": ["timers.target"],
                                                             "timerConfig": {"OnCalendar": "daily", "Persistent": True}}}}})
        self.assertEqual(files["/etc/systemd/system/b.timer"][0],
                         "[Unit]\n\n[Timer]\nOnCalendar=daily\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n")
        self.assertEqual(links, {"/etc/systemd/system/timers.target.wants/b.timer": "../b.timer"})

    def test_start_at_makes_a_timer_and_merges(self):
        files, links = ru.render({"units": {
            "services": {"b": {"startAt": "*-*-* 02:00:00", "serviceConfig": {"ExecStart": "/bin/true"}}},
            "timers": {"b": {"timerConfig": {"Persistent": True, "OnCalendar": ["Sun 03:00"]}}}}})
        t = files["/etc/systemd/system/b.timer"][0]
        self.assertIn("OnCalendar=*-*-* 02:00:00\nOnCalendar=Sun 03:00\nPersistent=true\n", t)
        self.assertIn("WantedBy=timers.target", t)
        self.assertIn("/etc/systemd/system/timers.target.wants/b.timer", links)

    def test_start_at_is_a_list_so_a_string_oncalendar_concatenates(self):
        # startAt is normalised to a list, and unitOption concatenates when any definition is a list
        files, _ = ru.render({"units": {"services": {"b": {"startAt": "daily"}},
                                        "timers": {"b": {"timerConfig": {"OnCalendar": "weekly"}}}}})
        self.assertIn("OnCalendar=daily\nOnCalendar=weekly\n", files["/etc/systemd/system/b.timer"][0])

    def test_scalar_conflict(self):
        with self.assertRaises(ru.RenderError):
            ru.render({"units": {"services": {"b": {"description": "a", "unitConfig": {"Description": "b"}}}}})

    def test_disabled_unit_is_masked(self):
        files, links = ru.render({"units": {"services": {"b": {"enable": False, "startAt": "daily"}}}})
        self.assertEqual(links["/etc/systemd/system/b.service"], "/dev/null")
        self.assertNotIn("/etc/systemd/system/b.timer", files)

    def test_template_and_requiredby_aliases(self):
        files, links = ru.render({"units": {"services": {
            "n@": {"serviceConfig": {"ExecStart": "/bin/echo %i"}},
            "m": {"requiredBy": ["x.target"], "aliases": ["mm.service"], "serviceConfig": {"ExecStart": "/bin/true"}}}}})
        self.assertIn("/etc/systemd/system/n@.service", files)
        self.assertEqual(links["/etc/systemd/system/x.target.requires/m.service"], "../m.service")
        self.assertEqual(links["/etc/systemd/system/mm.service"], "m.service")


class ExtraFiles(unittest.TestCase):
    def test_hooks_and_tmpfiles(self):
        out = ru.extra_files({"files": {"/opt/h/pre": "#!/bin/bash\nset -e\ntrue\n"},
                              "tmpfiles": ["d /var/lib/x 0700 root root - -"]})
        self.assertEqual(out["/opt/h/pre"], ("#!/bin/bash\nset -e\ntrue\n", 0o755))
        self.assertEqual(out["/etc/tmpfiles.d/hwc-backup.conf"], ("d /var/lib/x 0700 root root - -\n", 0o644))

    def test_authorized_keys_as_nixos_sshd_writes_them(self):
        line = 'command="/opt/x/bin/hwc-backup agent --allow /srv",restrict ssh-ed25519 AAAA k'
        out = ru.extra_files({"authorizedKeys": {"root": [line, "ssh-ed25519 BBBB k2"], "nobody": []}})
        self.assertEqual(out["/etc/ssh/authorized_keys.d/root"], (line + "\nssh-ed25519 BBBB k2\n", 0o444))
        self.assertNotIn("/etc/ssh/authorized_keys.d/nobody", out)
        with self.assertRaises(ru.RenderError):
            ru.extra_files({"authorizedKeys": {"../root": [line]}})
        with self.assertRaises(ru.RenderError):
            ru.extra_files({"authorizedKeys": {"root": [line + "\nssh-ed25519 CCCC evil"]}})

    def test_failed_assertions_refused(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "r.json")
            with open(p, "w") as f:
                f.write('{"plan": {}, "units": {}, "failedAssertions": ["no sources"]}')
            self.assertEqual(ru.main([p, os.path.join(d, "out")]), 1)


@unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
class SystemdAccepts(unittest.TestCase):
    def test_systemd_analyze_verify_is_silent(self):
        doc = {"units": {
            "services": {
                "hwct": {"description": "t", "onFailure": ["hwct-fail@%n.service"],
                         "unitConfig": {"RequiresMountsFor": ["/tmp"], "ConditionACPower": True},
                         "serviceConfig": {"Type": "oneshot", "ExecStart": "/bin/true", "ProtectSystem": "strict",
                                           "ReadWritePaths": ["/tmp"], "PrivateTmp": True, "Nice": 19},
                         "environment": {"A": "1"}, "restartIfChanged": False, "script": ""},
                "hwct-fail@": {"serviceConfig": {"Type": "oneshot", "ExecStart": "/bin/echo %i"}}},
            "timers": {"hwct": {"wantedBy": ["timers.target"],
                                "timerConfig": {"OnCalendar": "*-*-* 02:00:00", "Persistent": True}}}}}
        files, links = ru.render(doc)
        with tempfile.TemporaryDirectory() as d:
            ru.write_tree(d, files, links)
            unit_dir = os.path.join(d, "etc/systemd/system")
            paths = [os.path.join(unit_dir, f) for f in ("hwct.service", "hwct.timer")]
            r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + paths, capture_output=True, text=True,
                               env=dict(os.environ, SYSTEMD_UNIT_PATH=unit_dir + ":"))
            # judge by output: verify exits 0 on most mistakes
            lines = [l for l in (r.stdout + r.stderr).splitlines() if "hwct" in l]
            self.assertEqual(lines, [], r.stdout + r.stderr)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
