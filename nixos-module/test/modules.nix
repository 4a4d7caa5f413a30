# A small stand-in for the NixOS module system (lib.evalModules), enough to
# evaluate cairn's modules in the Go tests without nixpkgs.
#
# What it models:
# - modules as attribute sets or functions of { config, options, lib, pkgs,
#   ... }; `imports` (a module imported twice by path counts once); modules
#   with `options` and `config`, or the shorthand where the whole set is config;
# - option declarations made with stub-lib's mkOption: the default, the type
#   check of every definition, and merging: listOf concatenates, submodule
#   evaluates its own options with their defaults, every other type must be
#   defined once or identically;
# - mkIf, mkMerge and mkOverride (mkDefault, mkForce): only the definitions
#   with the lowest priority number count. mkIf is pushed down through
#   attribute sets without evaluating its condition, as in NixOS, so that a
#   module can read `config` in the condition that guards its own definitions;
# - a level of the option tree that declares options itself rejects
#   undeclared names (a typo in services.cairn.* is an error), unless it says
#   `_freeform = true` (the stand-in for NixOS' freeformType);
# - everything not declared at all (systemd.services, users, ...) is
#   free-form: conditions are evaluated there, attribute sets merge
#   recursively, lists concatenate in module order, other values must agree.
#   An undeclared name whose definitions are all switched off is absent,
#   except right under a declared level, where it is { } (the real options
#   there are attribute-set namespaces, and dropping the name would need the
#   condition before the attribute set exists).
#
# What it does not model: the rest of the option types, apply, readOnly,
# mkOrder/mkBefore/mkAfter, specialArgs and _module.args, disabledModules,
# functions as submodules, and the option documentation.
{ lib, pkgs, modules }:
let
  inherit (builtins)
    all any attrNames concatMap elem filter foldl' genericClosure head
    isAttrs isBool isFunction isList isPath isString length listToAttrs
    mapAttrs typeOf zipAttrsWith;

  showPath = builtins.concatStringsSep ".";
  kind = v: if isAttrs v then v._type or null else null;
  isOption = v: kind v == "option";
  isPackage = v: isAttrs v && v ? outPath;

  # Describes a value for an error message without copying a path into the
  # store, as "${path}" would.
  show = v:
    if isString v then builtins.toJSON v
    else if isPath v then "the path ${toString v}"
    else if isAttrs v || isList v || isFunction v then "a ${typeOf v}"
    else builtins.toJSON v;

  args = { inherit config options lib pkgs; };

  load = m: if isPath m || isString m then import m else m;
  body = m: let b = load m; in if isFunction b then b args else b;
  keyOf = fallback: m: if isPath m || isString m then toString m else fallback;
  entry = key: i: m: { key = keyOf "${key}:${toString i}" m; module = m; };

  collected = genericClosure {
    startSet = lib.imap0 (entry "top") ([ ./nixos-options.nix ] ++ modules);
    operator = item: lib.imap0 (entry item.key) ((body item.module).imports or [ ]);
  };

  normalise = b:
    if b ? options || b ? config
    then { options = b.options or { }; config = b.config or { }; }
    else { options = { }; config = removeAttrs b [ "imports" "_file" "key" ]; };

  bodies = map (item: normalise (body item.module)) collected;

  mergeDecls = path: decls: zipAttrsWith
    (name: vs:
      if name == "_freeform" then any (v: v) vs
      else if any isOption vs then
        (if length vs == 1 then head vs
        else throw "The option `${showPath (path ++ [ name ])}' is declared more than once.")
      else mergeDecls (path ++ [ name ]) vs)
    decls;

  options = mergeDecls [ ] (map (b: b.options) bodies);

  # mkIf/mkMerge/mkOverride around an attribute set become the same wrappers
  # around each of its attributes; no condition is evaluated.
  pushDown = path: def:
    let k = kind def; in
    if k == "merge" then concatMap (pushDown path) def.contents
    else if k == "if" then map (mapAttrs (_: lib.mkIf def.condition)) (pushDown path def.content)
    else if k == "override" then map (mapAttrs (_: lib.mkOverride def.priority)) (pushDown path def.content)
    else if isAttrs def then [ def ]
    else throw "`${showPath path}' is a set of options, but is defined as ${show def}.";

  # The definitions that count, as plain values: conditions evaluated,
  # mkMerge flattened, and only the lowest priority number kept.
  discharge = path: defs:
    let
      one = prio: def:
        let k = kind def; in
        if k == "if" then
          (if isBool def.condition then (if def.condition then one prio def.content else [ ])
          else throw "mkIf in `${showPath path}' has a condition that is ${show def.condition}, not a Boolean.")
        else if k == "merge" then concatMap (one prio) def.contents
        else if k == "override" then one def.priority def.content
        else [{ value = def; priority = prio; }];
      all' = concatMap (one 100) defs;
      best = foldl' (m: d: if d.priority < m then d.priority else m) 10000 all';
    in
    map (d: d.value) (filter (d: d.priority == best) all');

  # A level of the option tree.
  evalTree = path: decls: defs:
    let
      pushed = concatMap (pushDown path) defs;
      declared = filter (n: n != "_freeform") (attrNames decls);
      closed = !(decls._freeform or false) && any (n: isOption decls.${n}) declared;
      names = lib.unique (declared ++ concatMap attrNames pushed);
      defsOf = n: concatMap (d: if d ? ${n} then [ d.${n} ] else [ ]) pushed;
      value = n:
        let p = path ++ [ n ]; in
        if decls ? ${n} then
          (if isOption decls.${n} then evalOption p decls.${n} (defsOf n) else evalTree p decls.${n} (defsOf n))
        else if closed then throw "The option `${showPath p}' does not exist."
        else
          let r = evalFree p (defsOf n); in
          if r.defined then r.value else { };
    in
    listToAttrs (map (n: { name = n; value = value n; }) names);

  evalOption = path: opt: defs:
    let
      values = discharge path defs;
      checked = map
        (v:
          if opt.type.check v then v
          else throw "The option `${showPath path}' is defined as ${show v}, which is not of type ${opt.type.name}.")
        values;
    in
    if length values > 0 then mergeValues path opt.type checked
    else if opt ? default then mergeValues path opt.type [ opt.default ]
    else throw "The option `${showPath path}' is used but not defined.";

  mergeValues = path: type: values:
    if type.name == "listOf" then
      map (v: mergeValues path type.elemType [ v ]) (builtins.concatLists values)
    else if type.name == "submodule" then
      evalTree path type.module.options values
    else if type.name == "nullOr" && all (v: v != null) values then
      mergeValues path type.elemType values
    else if all (v: v == head values) values then head values
    else throw "The option `${showPath path}' has conflicting definitions: ${builtins.concatStringsSep ", " (map show values)}.";

  # An undeclared path: { defined; value; }.
  evalFree = path: defs:
    let
      values = discharge path defs;
      sets = all (v: isAttrs v && !isPackage v) values;
    in
    {
      defined = length values > 0;
      value =
        if length values == 0 then null
        else if sets then
          let
            names = lib.unique (concatMap attrNames values);
            sub = n: evalFree (path ++ [ n ]) (concatMap (v: if v ? ${n} then [ v.${n} ] else [ ]) values);
            present = filter (n: (sub n).defined) names;
          in
          listToAttrs (map (n: { name = n; value = (sub n).value; }) present)
        else if all isList values then builtins.concatLists values
        else if all (v: v == head values) values then head values
        else throw "`${showPath path}' has conflicting definitions: ${builtins.concatStringsSep ", " (map show values)}.";
    };

  config = evalTree [ ] options (map (b: b.config) bodies);
in
{
  inherit config options;
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
}
