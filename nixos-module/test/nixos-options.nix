# The few NixOS options that cairn's modules define, declared with their real
# types so that the stand-in evaluator type-checks cairn's definitions of them.
# Every namespace here is free-form because NixOS has many more options in it.
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options = {
    _freeform = true;

    assertions = mkOption {
      type = types.listOf types.attrs;
      default = [ ];
    };

    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    networking.firewall = {
      _freeform = true;
      allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
    };

    nix.settings = {
      _freeform = true;
      substituters = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      trusted-public-keys = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };

    programs.fuse = {
      _freeform = true;
      userAllowOther = mkOption {
        type = types.bool;
        default = false;
      };
    };
  };
}
