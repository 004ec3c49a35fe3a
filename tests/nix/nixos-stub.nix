# A small stand-in for the NixOS options that modules/backup.nix sets, for evaluating the module
# with nixpkgs' real `lib.evalModules` but without nixpkgs (tests/nix/eval-module.nix). The unit
# options copy the types NixOS gives them (shared/nix-facts.md §1): unit names must carry a
# suffix, list-valued settings concatenate across definitions and other settings must agree,
# serviceConfig's Type/Restart are checked, environment values must be strings or paths.
{ lib, ... }:
let
  inherit (lib) types mkOption;

  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      if lib.any (def: lib.isList def.value) defs then
        lib.concatMap (def: lib.toList def.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  # As NixOS does: the check sees raw definitions, so mkDefault/mkIf wrappers are opened first.
  checkService =
    attrs:
    let
      value = v: if lib.elem (v._type or "") [ "override" "if" ] then v.content else v;
      oneOf = name: allowed: !(attrs ? ${name}) || lib.elem (value attrs.${name}) allowed;
    in
    oneOf "Type" [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ]
    && oneOf "Restart" [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ];

  listOfUnits = mkOption {
    type = types.listOf unitNameType;
    default = [ ];
  };

  commonUnit = {
    enable = mkOption {
      type = types.bool;
      default = true;
    };
    description = mkOption {
      type = types.singleLineStr;
      default = "";
    };
    documentation = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    requires = listOfUnits;
    wants = listOfUnits;
    upholds = listOfUnits;
    after = listOfUnits;
    before = listOfUnits;
    bindsTo = listOfUnits;
    partOf = listOfUnits;
    conflicts = listOfUnits;
    requisite = listOfUnits;
    onFailure = listOfUnits;
    onSuccess = listOfUnits;
    wantedBy = listOfUnits;
    requiredBy = listOfUnits;
    unitConfig = mkOption {
      type = types.attrsOf unitOption;
      default = { };
    };
  };

  service = types.submodule {
    options = commonUnit // {
      serviceConfig = mkOption {
        type = types.addCheck (types.attrsOf unitOption) checkService;
        default = { };
      };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
        default = { };
      };
      path = mkOption {
        type = types.listOf (types.either types.package types.str);
        default = [ ];
      };
      postStop = mkOption {
        type = types.lines;
        default = "";
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      stopIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
    };
  };

  # Free-form, so that a test may still declare some of a service's options itself.
  looseService = mkOption {
    type = types.submodule { freeformType = types.attrsOf types.anything; };
    default = { };
  };

  timer = types.submodule {
    options = commonUnit // {
      timerConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };
in
{
  options = {
    networking.hostName = mkOption {
      type = types.str;
      default = "nixos";
    };
    services.openssh.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # The services whose options the profiles read (nix/profiles/), loosely: a case sets what
    # NixOS would hold.
    services.nextcloud = looseService;
    services.vaultwarden = looseService;
    services.home-assistant = looseService;
    services.postgresql = looseService;
    services.gitea = looseService;
    services.forgejo = looseService;
    system.stateVersion = mkOption {
      type = types.str;
      default = "26.05";
    };
    users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.openssh.authorizedKeys.keys = mkOption {
            type = types.listOf types.singleLineStr;
            default = [ ];
          };
        }
      );
      default = { };
    };
    environment.etc = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.source = mkOption { type = types.anything; };
        }
      );
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.anything;
      default = [ ];
    };
    systemd.services = mkOption {
      type = types.attrsOf service;
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf timer;
      default = { };
    };
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    system.activationScripts = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.text = mkOption { type = types.lines; };
          options.deps = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        }
      );
      default = { };
    };
    system.checks = mkOption {
      type = types.listOf types.anything;
      default = [ ];
    };
    assertions = mkOption {
      type = types.listOf types.anything;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
  };
}
