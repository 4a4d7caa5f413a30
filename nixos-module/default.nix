# services.cairn: a Nix binary cache appliance (pull-through proxy for
# upstream caches, push target, read-only FUSE view).
#
# services.cairn.package has no default outside cairn's flake: the flake's
# nixosModules.default sets it to the flake's own package, and anywhere else
# it falls back to `pkgs.cairn` if an overlay provides one. If neither exists
# an assertion asks for it.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkIf mkMerge mkOption types;

  cfg = config.services.cairn;

  port = lib.toInt (lib.last (lib.splitString ":" cfg.listen));

  # systemd splits ExecStart itself, without a shell: quote what is not
  # plainly safe, and double the specifier and variable characters.
  escapeArg = arg:
    let quoted = if builtins.match "[[:alnum:]_./:=?&@+,-]+" arg != null then arg else builtins.toJSON arg;
    in builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] quoted;

  # Secrets reach the service as systemd credentials: systemd copies each file
  # into a directory only the service can read, and ExecStart names it as
  # %d/<name>. The files themselves stay outside the Nix store.
  credentials =
    lib.optional (cfg.signingKeyFile != null) { name = "signing-key"; flag = "--signing-key-file"; path = cfg.signingKeyFile; }
    ++ lib.optional (cfg.tokensFile != null) { name = "tokens"; flag = "--tokens-file"; path = cfg.tokensFile; };

  upstreamArg = u: "${u.url}${if lib.hasInfix "?" u.url then "&" else "?"}priority=${toString u.priority}";

  trustedKeys = lib.unique (lib.concatMap (u: u.publicKeys) cfg.upstreams);

  args =
    [ "serve" "--listen" cfg.listen "--data" cfg.dataDir ]
    ++ lib.concatMap (u: [ "--upstream" (upstreamArg u) ]) cfg.upstreams
    ++ lib.concatMap (k: [ "--trusted-key" k ]) trustedKeys
    ++ lib.optionals (cfg.keyName != null) [ "--key-name" cfg.keyName ]
    ++ lib.optionals (cfg.maxSize != null) [ "--max-size" cfg.maxSize ]
    ++ lib.optionals cfg.mount.enable [ "--mount" cfg.mount.path ]
    ++ [ "--prefetch=${lib.boolToString cfg.prefetch}" "--deltas=${lib.boolToString cfg.deltas}" "--log-level" cfg.logLevel ];

  execStart = lib.concatStringsSep " " (
    [ "${cfg.package}/bin/cairn" ]
    ++ map escapeArg args
    # Not escaped: %d must reach systemd as a specifier.
    ++ lib.concatMap (c: [ c.flag "%d/${c.name}" ]) credentials
    ++ map escapeArg cfg.extraArgs
  );

  # StateDirectory= and RuntimeDirectory= create and chown their directory on
  # every start, but only under /var/lib and /run; elsewhere tmpfiles does it.
  stateDirectory = lib.removePrefix "/var/lib/" cfg.dataDir;
  dataInStateDir = lib.hasPrefix "/var/lib/" cfg.dataDir;
  mountInRuntimeDir = lib.hasPrefix "/run/" cfg.mount.path;

  secretInStore = name: value: {
    assertion = value == null || !(lib.hasPrefix "${builtins.storeDir}/" value);
    message = "services.cairn.${name} is in the Nix store (${toString value}), where every local user can read it. Keep the file outside the store and give its path as a string.";
  };

  upstreamModule = {
    options = {
      url = mkOption {
        type = types.strMatching "(https?|file)://.+";
        example = "https://cache.nixos.org";
        description = "Base URL of a Nix binary cache: http(s):// or file:// (a seed drive or a local cache).";
      };
      priority = mkOption {
        type = types.ints.unsigned;
        default = 50;
        description = "Lower numbers are asked first on a miss, as with Nix's own substituter priorities.";
      };
      publicKeys = mkOption {
        type = types.listOf (types.strMatching "[^:[:space:]]+:[A-Za-z0-9+/]+={0,2}");
        default = [ ];
        example = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
        description = ''
          Public keys (NAME:BASE64) whose signatures cairn accepts. cairn trusts
          the keys of all upstreams together (one --trusted-key list).
        '';
      };
    };
  };
in
{
  imports = [ ./client.nix ];

  options.services.cairn = {
    enable = lib.mkEnableOption "cairn, a Nix binary cache appliance";

    package = mkOption {
      type = types.nullOr types.package;
      default = pkgs.cairn or null;
      defaultText = lib.literalExpression "pkgs.cairn or null (cairn's flake module sets its own package)";
      description = "The cairn package. Set by cairn's flake module (nixosModules.default).";
    };

    listen = mkOption {
      type = types.strMatching ".*:[0-9]+";
      default = "0.0.0.0:8501";
      example = "[::]:8501";
      description = "Address and port to serve the binary cache on (HOST:PORT). openFirewall opens this port.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of `listen` in the firewall.";
    };

    dataDir = mkOption {
      type = types.strMatching "/[^[:space:]]+";
      default = "/var/lib/cairn";
      description = ''
        Where cairn keeps its index, chunks and (unless signingKeyFile is set)
        its generated signing key. Under /var/lib it is a systemd
        StateDirectory; anywhere else tmpfiles creates it.
      '';
    };

    upstreams = mkOption {
      type = types.listOf (types.submodule upstreamModule);
      default = [{
        url = "https://cache.nixos.org";
        priority = 40;
        publicKeys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
      }];
      example = lib.literalExpression ''
        [
          { url = "https://cache.nixos.org"; priority = 40; publicKeys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ]; }
          { url = "file:///media/seed"; priority = 10; publicKeys = [ "seed-1:..." ]; }
        ]
      '';
      description = "Binary caches to fetch from on a miss, at least one. cairn checks every upstream narinfo's signature against their keys.";
    };

    maxSize = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "200G";
      description = "Disk space (physical bytes) above which cairn evicts the least recently used paths. null: no limit.";
    };

    keyName = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "cache.example.org-1";
      description = "Name of cairn's own signing key. null: cairn's default, HOSTNAME-1.";
    };

    signingKeyFile = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/run/secrets/cairn-signing-key";
      description = ''
        cairn's Ed25519 secret key in Nix format (as written by
        `nix-store --generate-binary-cache-key`). A string, not a Nix path, so
        that the key is never copied into the store; it reaches the service as
        a systemd credential. null: cairn generates one in dataDir on its
        first start. Either way, `curl http://HOST:8501/pubkey` prints the
        public key for clients.
      '';
    };

    tokensFile = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/run/secrets/cairn-tokens";
      description = ''
        File of access tokens, one "ROLE TOKEN" per line, ROLE being read,
        write or admin. Pushing (`nix copy --to`) and the admin API need a
        token from it. A string, not a Nix path, so that the tokens are never
        copied into the store; it reaches the service as a systemd credential.
      '';
    };

    mount = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Serve the read-only FUSE view (every cached NAR as a file and every
          store path as a file tree) at mount.path. This gives the service
          CAP_SYS_ADMIN and turns off systemd's file-system sandboxing, which
          would hide the mount from the rest of the system.
        '';
      };
      path = mkOption {
        type = types.strMatching "/[^[:space:]]+";
        default = "/run/cairn/mnt";
        description = "Mount point of the FUSE view.";
      };
    };

    prefetch = mkOption {
      type = types.bool;
      default = true;
      description = "Start fetching a NAR in the background when its narinfo is requested.";
    };

    deltas = mkOption {
      type = types.bool;
      default = true;
      description = "Store a chunk as a delta against a similar chunk of another stored path when that saves an eighth of its frame; false keeps every chunk an independent frame.";
    };

    logLevel = mkOption {
      type = types.enum [ "debug" "info" "warn" "error" ];
      default = "info";
      description = "Log level.";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--some-new-flag=value" ];
      description = "Extra arguments for `cairn serve`.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.package != null;
        message = "services.cairn.package is not set: use cairn's flake module (nixosModules.default), which sets it, or set it to a cairn package.";
      }
      {
        # Given no --upstream, cairn serve uses cache.nixos.org.
        assertion = cfg.upstreams != [ ];
        message = "services.cairn.upstreams is empty: cairn serve would fall back to cache.nixos.org. List the upstreams to use.";
      }
      {
        # cairn serve refuses to start without one.
        assertion = cfg.upstreams == [ ] || trustedKeys != [ ];
        message = "services.cairn.upstreams have no publicKeys: cairn checks every upstream narinfo's signature, so it needs each upstream's key.";
      }
      (secretInStore "signingKeyFile" cfg.signingKeyFile)
      (secretInStore "tokensFile" cfg.tokensFile)
    ];

    # A static user rather than DynamicUser: DynamicUser implies a private
    # mount namespace, which would hide the FUSE view, and the data directory
    # keeps one owner whether or not the view is enabled.
    users.users.cairn = {
      isSystemUser = true;
      group = "cairn";
      description = "cairn binary cache";
    };
    users.groups.cairn = { };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ port ];

    systemd.tmpfiles.rules =
      lib.optional (!dataInStateDir) "d ${cfg.dataDir} 0700 cairn cairn - -"
      ++ lib.optional (cfg.mount.enable && !mountInRuntimeDir) "d ${cfg.mount.path} 0755 cairn cairn - -";

    # fusermount3 refuses allow_other to non-root users unless fuse.conf
    # allows it, and without allow_other only the cairn user sees the view.
    programs.fuse.userAllowOther = mkIf cfg.mount.enable (lib.mkDefault true);

    systemd.services.cairn = {
      description = "cairn Nix binary cache appliance";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # xz decodes upstream NARs several times faster than cairn's pure-Go
      # fallback; fusermount3 mounts the view when cairn does not mount itself.
      path = [ pkgs.xz ] ++ lib.optional cfg.mount.enable pkgs.fuse3;

      serviceConfig = mkMerge [
        {
          Type = "exec";
          ExecStart = execStart;
          User = "cairn";
          Group = "cairn";
          LoadCredential = map (c: "${c.name}:${c.path}") credentials;
          Restart = "on-failure";
          RestartSec = "5s";
          UMask = "0077";

          CapabilityBoundingSet = if cfg.mount.enable then [ "CAP_SYS_ADMIN" ] else "";
          NoNewPrivileges = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          ProtectClock = true;
          ProtectHostname = true;
          RemoveIPC = true;
          RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ]
            # Added back after the exclusions above. mount(2) for the view;
            # fusermount3 switches its file-system uid to the caller's with
            # setfsuid/setfsgid, which @privileged contains.
            ++ lib.optionals cfg.mount.enable [ "@mount" "setfsuid" "setfsgid" ];
        }

        (mkIf dataInStateDir {
          StateDirectory = stateDirectory;
          StateDirectoryMode = "0700";
        })

        # The file-system sandbox. Every one of these settings gives the
        # service its own mount namespace, and systemd never propagates mounts
        # from a unit's namespace back to the host, so a FUSE view mounted
        # under any of them would be visible to cairn alone. With the view
        # enabled they are all off; the rest of the hardening above stays.
        (mkIf (!cfg.mount.enable) {
          PrivateDevices = true;
          PrivateTmp = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectProc = "invisible";
          ReadWritePaths = lib.optional (!dataInStateDir) cfg.dataDir;
        })

        (mkIf cfg.mount.enable {
          # Mounting a FUSE file system needs CAP_SYS_ADMIN, whether cairn
          # calls mount(2) itself or runs fusermount3. Ambient, so that the
          # plain (not setuid) fusermount3 from `path` inherits it and
          # NoNewPrivileges can stay on. The bounding set (above) holds
          # nothing else.
          AmbientCapabilities = [ "CAP_SYS_ADMIN" ];
          # No private /dev (it would need a mount namespace); the device
          # cgroup allows /dev/fuse and the standard pseudo devices only.
          PrivateDevices = false;
          DevicePolicy = "closed";
          DeviceAllow = [ "/dev/fuse rw" ];
          # No ReadWritePaths for the mount point either: ProtectSystem is
          # off, and ReadWritePaths would itself create a mount namespace.
          # A stale mount left by a crash would make the next start fail;
          # unmount it lazily as root ("+") and ignore failure ("-").
          ExecStopPost = "-+${pkgs.fuse3}/bin/fusermount3 -u -z ${escapeArg cfg.mount.path}";
        })

        (mkIf (cfg.mount.enable && mountInRuntimeDir) {
          # Creates the mount point, owned by cairn, on every start.
          RuntimeDirectory = lib.removePrefix "/run/" cfg.mount.path;
          RuntimeDirectoryMode = "0755";
        })
      ];
    };
  };
}
