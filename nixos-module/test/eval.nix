# Evaluates cairn's NixOS modules with the stand-in lib, pkgs and module
# system, for nixos-module/module_test.go:
#
#   nix-instantiate --eval --strict --json test/eval.nix \
#     --argstr configJSON '{"services":{"cairn":{"enable":true}}}'
#
# configJSON is the configuration under test as JSON; `extra` is one more
# module given as a Nix expression (for values JSON cannot express, such as a
# path); withPackage = false leaves services.cairn.package at its default.
{ configJSON ? "{}", extra ? { }, withPackage ? true, server ? true }:
let
  lib = import ./stub-lib.nix;
  pkgs = import ./stub-pkgs.nix { };

  result = import ./modules.nix {
    inherit lib pkgs;
    modules =
      (if server then [ ../default.nix ] else [ ../client.nix ])
      ++ lib.optional (server && withPackage) { services.cairn.package = lib.mkDefault pkgs.cairnStub; }
      ++ [ (builtins.fromJSON configJSON) extra ];
  };
  inherit (result) config;
in
{
  inherit (result) failedAssertions warnings;
  # The server's options as the module sees them (client.* has an option
  # without a default, which NixOS too would only evaluate when enabled).
  cairn = removeAttrs config.services.cairn [ "client" ];
  service = config.systemd.services.cairn or null;
  tmpfiles = config.systemd.tmpfiles.rules or [ ];
  users = config.users or { };
  firewallTCP = config.networking.firewall.allowedTCPPorts;
  fuseUserAllowOther = config.programs.fuse.userAllowOther;
  nixSettings = config.nix.settings;
  # What the modules make of their options, for the check that no secret
  # leaks into the system: everything but the options of services.cairn
  # themselves, and assertions and warnings, which never reach a derivation.
  system = removeAttrs config [ "assertions" "warnings" ]
    // { services = removeAttrs config.services [ "cairn" ]; };
  packagePath = pkgs.cairnStub.outPath;
}
