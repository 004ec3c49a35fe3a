# Renders one VM test configuration through the real module option declarations and the real
# nix/render.nix, offline (Debian's Nix 2.8, no nixpkgs):
#
#   nix-instantiate --eval --strict --json tests/systemd/render-input.nix \
#     --argstr package /opt/hwc-backup --argstr variant base \
#     --argstr pullKey "$(cat key.pub)"
#
# Like tests/nix/eval.nix (both fill the options with tests/nix/fill-options.nix), with two differences for a VM
# that really runs the units: the package path is where the test copies the freshly built binary,
# and hooks (pre/postBackupScript) become real files, written the way the module writes them
# (pkgs.writeShellScript name "set -e\n<text>"), returned in `files` for the test to install;
# the agent's authorized_keys entries are returned in `authorizedKeys` (user -> lines). `pullKey`
# is the public key the cases' agent authorizes (ssh-keygen's one line, generated per run).
{
  package,
  variant,
  pullKey,
  hookDir ? "/opt/hwc-test/hooks",
}:
let
  inherit (builtins) filter listToAttrs map;

  definitions = import (./cases + "/${variant}.nix") { inherit pullKey; };

  cfg = import ../nix/fill-options.nix { inherit definitions package; };

  hookPath = name: "${hookDir}/${name}";
  hookText = text: "#!/bin/bash\nset -e\n${text}";

  # A "fake store": each nixpkgs package the module names becomes /nix/store/<hash>-<name>, which
  # the guest fills with symlinks to exactly that package's programs from its Debian packages
  # (`fakeStore`: directory -> Debian packages, or absolute files). The module's arguments are
  # passed as modules/backup.nix passes them (store paths, never a bare name), and each unit's
  # PATH holds those directories only, as on NixOS: the unit's `path` plus NixOS's defaults
  # (`defaultPath`). A program found on Debian's /usr/bin but missing from the module's `path`
  # then fails here as it would on NixOS.
  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  fakeStore = {
    ${store "coreutils"} = [ "coreutils" ];
    ${store "findutils"} = [ "findutils" ];
    ${store "gnugrep"} = [ "grep" ];
    ${store "gnused"} = [ "sed" ];
    ${store "systemd"} = [ "systemd" "udev" ];
    # nixpkgs' util-linux holds what Debian splits into util-linux, mount and bsdutils.
    ${store "util-linux"} = [ "util-linux" "mount" "bsdutils" ];
    ${store "getent"} = [ "/usr/bin/getent" ];
    ${store "openssh"} = [ "openssh-client" ];
    ${store "btrfs-progs"} = [ "btrfs-progs" ];
    ${store "lvm2"} = [ "lvm2" ];
    # The host's Debian restic, copied in by the test (the image has none).
    ${store "restic"} = [ "/opt/hwc-test/restic" ];
  };
  defaultPath = map store [ "coreutils" "findutils" "gnugrep" "gnused" "systemd" ];

  rendered = import ../../nix/render.nix {
    inherit cfg package;
    writeHook = name: _text: hookPath name;
    rclone = "${store "rclone"}/bin/rclone";
    ssh = "${store "openssh"}/bin/ssh";
    flock = "${store "util-linux"}/bin/flock";
    restic = "${store "restic"}/bin/restic";
    systemdInhibit = "${store "systemd"}/bin/systemd-inhibit";
    btrfsProgs = store "btrfs-progs";
    path = [ (store "util-linux") (store "getent") ];
    # lvm2 (in the guest image), for the LVM source snapshot scenario.
    lvm = "${store "lvm2"}/bin/lvm";
  };
in
{
  inherit (rendered) plan units warnings;
  inherit fakeStore defaultPath;
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) rendered.assertions);
  # Files the NixOS module would put in the store / tmpfiles would create.
  files = listToAttrs (
    map (h: { name = hookPath h.name; value = hookText h.text; }) (
      filter (h: h.text != "") [
        { name = "hwc-backup-pre-backup"; text = cfg.preBackupScript; }
        { name = "hwc-backup-post-backup"; text = cfg.postBackupScript; }
        # system.activationScripts.hwc-backup-timers (the switch scenario runs it).
        { name = "activation-hwc-backup-timers"; text = rendered.activation; }
      ]
    )
  );
  # modules/backup.nix with agent.enable: users.users.<agent.user>.openssh.authorizedKeys.keys,
  # which NixOS's sshd module writes to /etc/ssh/authorized_keys.d/<user> (one of its
  # AuthorizedKeysFile locations).
  authorizedKeys =
    if cfg.agent.enable then { ${cfg.agent.user} = rendered.agent.authorizedKeys; } else { };
  # modules/backup.nix: systemd.tmpfiles.rules
  tmpfiles = [
    "d ${rendered.plan.stateDir} 0700 root root - -"
    "d ${rendered.plan.logDir} 0700 root root - -"
  ];
}
