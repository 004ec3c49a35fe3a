# Just enough of nixpkgs' `lib` to read the option declarations of modules/backup.nix with
# Debian's Nix 2.8 and no nixpkgs: mkOption keeps its arguments, and every type is reduced to a
# `check` predicate and a `description` (attrsOf and submodule also keep what they are made of). Nothing in the module's `config` part is supported
# (eval.nix never reads it); the real lib is used by the HWC_NIXPKGS_LIB test.
let
  inherit (builtins)
    all
    attrValues
    elem
    isAttrs
    isBool
    isInt
    isList
    isPath
    isString
    match
    substring
    ;
  type = description: check: { inherit description check; };
  str = type "string" isString;
in
rec {
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: mkOption {
    type = types.bool;
    default = false;
    description = "Whether to enable ${name}.";
  };
  mkPackageOption = pkgs: name: _: mkOption {
    type = types.package;
    default = pkgs.${name};
    description = "The ${name} package to use.";
  };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  literalMD = text: { _type = "literalMD"; inherit text; };

  types = rec {
    inherit str;
    lines = str;
    nonEmptyStr = type "non-empty string" (x: isString x && x != "");
    bool = type "boolean" isBool;
    int = type "signed integer" isInt;
    ints.unsigned = type "unsigned integer" (x: isInt x && x >= 0);
    ints.positive = type "positive integer, meaning >0" (x: isInt x && x > 0);
    ints.between =
      lo: hi: type "integer between ${toString lo} and ${toString hi} (both inclusive)" (
        x: isInt x && x >= lo && x <= hi
      );
    port = type "16 bit unsigned integer; between 0 and 65535 (both inclusive)" (
      x: isInt x && x >= 0 && x <= 65535
    );
    path = type "absolute path" (x: isPath x || (isString x && substring 0 1 x == "/"));
    package = type "package" (_: true);
    # As nixpkgs' pathWith checks it: `inStore = false` takes only strings (a path value would be
    # copied into the store), and a string below the store directory is in the store.
    pathWith =
      {
        inStore ? null,
        absolute ? null,
      }:
      type "path" (
        x:
        (if inStore == false then isString x else isString x || isPath x)
        && (absolute == null || absolute == (substring 0 1 (toString x) == "/"))
        && (inStore == null || inStore == (match "${builtins.storeDir}/[^/]+.*" (toString x) != null))
      );
    strMatching = re: type "string matching ${re}" (x: isString x && match re x != null);
    enum = xs: type "one of ${builtins.toJSON xs}" (x: elem x xs);
    nullOr = t: type "null or ${t.description}" (x: x == null || t.check x);
    listOf = t: type "list of ${t.description}" (x: isList x && all t.check x);
    addCheck = t: f: type t.description (x: t.check x && f x);
    # The module (a function of { name, ... }) is kept for fill-options.nix, which fills each
    # entry's options as it fills the top-level ones.
    submodule = module: type "submodule" isAttrs // { inherit module; };
    attrsOf =
      t:
      type "attribute set of ${t.description}" (x: isAttrs x && all t.check (attrValues x))
      // {
        elemType = t;
      };
  };
}
