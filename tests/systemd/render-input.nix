# Renders one VM test configuration through the real module option declarations and the real
# nix/render.nix, offline (Debian's Nix 2.8, no nixpkgs):
#
#   nix-instantiate --eval --strict --json tests/systemd/render-input.nix \
#     --argstr package /opt/hwc-backup --argstr variant base
#
# Like tests/nix/eval.nix (both fill the options with tests/nix/fill-options.nix), with two differences for a VM
# that really runs the units: the package path is where the test copies the freshly built binary,
# and hooks (pre/postBackupScript) become real files, written the way the module writes them
# (pkgs.writeShellScript name "set -e\n<text>"), returned in `files` for the test to install.
{
  package,
  variant,
  hookDir ? "/opt/hwc-test/hooks",
}:
let
  inherit (builtins) filter listToAttrs map;

  definitions = import (./cases + "/${variant}.nix");

  cfg = import ../nix/fill-options.nix { inherit definitions package; };

  hookPath = name: "${hookDir}/${name}";
  hookText = text: "#!/bin/bash\nset -e\n${text}";

  rendered = import ../../nix/render.nix {
    inherit cfg package;
    writeHook = name: _text: hookPath name;
    rclone = null;
  };
in
{
  inherit (rendered) plan units warnings;
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) rendered.assertions);
  # Files the NixOS module would put in the store / tmpfiles would create.
  files = listToAttrs (
    map (h: { name = hookPath h.name; value = hookText h.text; }) (
      filter (h: h.text != "") [
        { name = "hwc-backup-pre-backup"; text = cfg.preBackupScript; }
        { name = "hwc-backup-post-backup"; text = cfg.postBackupScript; }
      ]
    )
  );
  # modules/backup.nix: systemd.tmpfiles.rules
  tmpfiles = [
    "d ${rendered.plan.stateDir} 0700 root root - -"
    "d ${rendered.plan.logDir} 0700 root root - -"
  ];
}
