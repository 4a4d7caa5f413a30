# services.cairn.client: use a cairn box as a substituter. Needs no cairn
# package; cairn's flake exports it alone as nixosModules.client, and the
# server module (default.nix) imports it too.
{ config, lib, ... }:

let
  inherit (lib) mkOption types;
  cfg = config.services.cairn.client;
in
{
  options.services.cairn.client = {
    enable = lib.mkEnableOption "a cairn box as a Nix substituter";

    url = mkOption {
      type = types.strMatching "https?://.+";
      example = "http://cairn.lan:8501";
      description = ''
        The box's URL. The box is tried before cache.nixos.org when its
        nix-cache-info priority is not higher than 40; append `?priority=N`
        to override that.
      '';
    };

    publicKey = mkOption {
      type = types.strMatching "[^:[:space:]]+:[A-Za-z0-9+/]+={0,2}";
      example = "cairn-1:AbCdEf...=";
      description = "The box's public key, NAME:BASE64, as printed by `curl http://BOX:8501/pubkey`.";
    };
  };

  config = lib.mkIf cfg.enable {
    nix.settings.substituters = [ cfg.url ];
    nix.settings.trusted-public-keys = [ cfg.publicKey ];
  };
}
