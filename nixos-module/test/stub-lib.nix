# A stand-in for the part of nixpkgs' `lib` that cairn's modules and flake
# use, so that the Go tests can evaluate them with a bare Nix and no nixpkgs.
# Every function here has the same name, arguments and result as its nixpkgs
# counterpart for the inputs cairn gives it. Option types are markers with a
# name and a `check`; modules.nix merges definitions by that name.
let
  inherit (builtins)
    all any concatLists concatStringsSep elem filter foldl' genList head
    isAttrs isBool isInt isList isString length listToAttrs match split
    stringLength substring;

  mkType = name: check: extra: { _type = "option-type"; inherit name check; } // extra;
in
rec {
  # --- the module system's vocabulary (interpreted by modules.nix) ---

  mkOption = attrs: { _type = "option"; } // attrs;

  mkEnableOption = name: mkOption {
    type = types.bool;
    default = false;
    example = true;
    description = "Whether to enable ${name}.";
  };

  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;

  literalExpression = text: { _type = "literalExpression"; inherit text; };

  types = rec {
    bool = mkType "bool" isBool { };
    str = mkType "str" isString { };
    int = mkType "int" isInt { };
    port = mkType "port" (v: isInt v && v >= 0 && v <= 65535) { };
    ints.unsigned = mkType "ints.unsigned" (v: isInt v && v >= 0) { };
    # nixpkgs accepts derivations and store path strings; the stub packages
    # are attribute sets with an outPath.
    package = mkType "package" (v: isAttrs v && v ? outPath) { };
    attrs = mkType "attrs" isAttrs { };
    unspecified = mkType "unspecified" (_: true) { };
    enum = values: mkType "enum" (v: elem v values) { inherit values; };
    strMatching = pattern: mkType "strMatching" (v: isString v && match pattern v != null) { inherit pattern; };
    nullOr = elemType: mkType "nullOr" (v: v == null || elemType.check v) { inherit elemType; };
    listOf = elemType: mkType "listOf" (v: isList v && all elemType.check v) { inherit elemType; };
    # Only attribute-set modules ({ options = ...; }), which is all cairn uses.
    submodule = module: mkType "submodule" isAttrs { inherit module; };
  };

  # --- lists ---

  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  concatMap = builtins.concatMap;
  inherit concatLists filter any all elem;
  last = xs: builtins.elemAt xs (length xs - 1);
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  imap0 = f: xs: genList (i: f i (builtins.elemAt xs i)) (length xs);

  # --- attribute sets ---

  optionalAttrs = cond: attrs: if cond then attrs else { };
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  inherit (builtins) mapAttrs attrNames attrValues;

  # --- strings ---

  optionalString = cond: s: if cond then s else "";
  inherit concatStringsSep;
  concatMapStrings = f: xs: concatStringsSep "" (map f xs);
  inherit (builtins) replaceStrings;
  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  hasSuffix = suffix: s:
    let n = stringLength s; m = stringLength suffix;
    in n >= m && substring (n - m) m s == suffix;
  hasInfix = infix: s: match ".*${escapeRegex infix}.*" s != null;
  removePrefix = prefix: s:
    if hasPrefix prefix s then substring (stringLength prefix) (stringLength s) s else s;
  splitString = sep: s: filter isString (split (escapeRegex sep) s);
  escapeRegex = replaceStrings
    [ "\\" "[" "]" "{" "}" "(" ")" "^" "$" "*" "+" "?" "." "|" ]
    [ "\\\\" "\\[" "\\]" "\\{" "\\}" "\\(" "\\)" "\\^" "\\$" "\\*" "\\+" "\\?" "\\." "\\|" ];
  boolToString = b: if b then "true" else "false";
  toInt = s:
    if match "[0-9]+" s != null then builtins.fromJSON (head (match "0*([0-9]+)" s))
    else throw "toInt: could not convert ${builtins.toJSON s} to an integer";
  makeBinPath = pkgs: concatStringsSep ":" (map (p: "${p}/bin") pkgs);

  platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
}
