# NixOS VM test, run by `nix flake check` or
#   nix build .#checks.x86_64-linux.vm -L
#
# `box` runs cairn with one upstream: a file:// binary cache that the test
# fills with a store path signed by a test key. `client` substitutes that
# path through the box, checks the box's signature, and pushes a path to the
# box with a write token. Then the box switches to a configuration with the
# FUSE view and the test reads the path through the mount from outside the
# service.
#
# keys/ holds throwaway keys made for this test with
# `nix-store --generate-binary-cache-key`.
{ self }:
let
  upstreamDir = "/var/lib/upstream-cache";
  upstreamKey = builtins.readFile ./keys/upstream.public;
  boxKey = builtins.readFile ./keys/box.public;
  writeToken = "test-write-token";
  payload = "cairn vm test payload";
in
{
  name = "cairn";

  nodes.box = { pkgs, ... }: {
    imports = [ self.nixosModules.default ];

    services.cairn = {
      enable = true;
      openFirewall = true;
      upstreams = [{
        url = "file://${upstreamDir}";
        priority = 10;
        publicKeys = [ upstreamKey ];
      }];
      # Through /etc, so the options get paths outside the store as real
      # secrets would (agenix, sops-nix, ...); the keys here are test keys.
      signingKeyFile = "/etc/cairn-test/box.secret";
      tokensFile = "/etc/cairn-test/tokens";
    };

    environment.etc."cairn-test/box.secret".source = ./keys/box.secret;
    environment.etc."cairn-test/upstream.secret".source = ./keys/upstream.secret;
    environment.etc."cairn-test/tokens".text = "write ${writeToken}\n";
    environment.systemPackages = [ pkgs.curl ];

    specialisation.fuse.configuration.services.cairn.mount.enable = true;
  };

  nodes.client = { pkgs, ... }: {
    imports = [ self.nixosModules.client ];

    services.cairn.client = {
      enable = true;
      url = "http://box:8501";
      publicKey = boxKey;
    };

    # Nix sends the netrc password as HTTP Basic auth, which cairn takes as a token.
    nix.settings.netrc-file = "/etc/nix/netrc";
    environment.etc."nix/netrc".text = "machine box\nlogin cairn\npassword ${writeToken}\n";
    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    nix = "nix --extra-experimental-features nix-command"

    start_all()
    box.wait_for_unit("multi-user.target")

    with subtest("an upstream cache with one signed path"):
        path = box.succeed(
            "echo '${payload}' > /tmp/cairn-vm-test-payload"
            " && nix-store --add /tmp/cairn-vm-test-payload"
        ).strip()
        box.succeed(
            f"{nix} copy --to 'file://${upstreamDir}?secret-key=/etc/cairn-test/upstream.secret' {path}"
            " && chmod -R a+rX ${upstreamDir}"
        )
        # cairn started at boot, before its upstream existed.
        box.systemctl("restart cairn.service")
        box.wait_for_unit("cairn.service")
        box.wait_for_open_port(8501)

    with subtest("the service runs as cairn with its secrets as credentials"):
        box.succeed("test \"$(systemctl show -P User cairn.service)\" = cairn")
        box.succeed("test -s /run/credentials/cairn.service/signing-key")
        box.succeed("test -s /run/credentials/cairn.service/tokens")
        pubkey = box.succeed("curl -sSf http://127.0.0.1:8501/pubkey").strip()
        assert pubkey == "${boxKey}", f"/pubkey says {pubkey!r}"

    with subtest("a client substitutes the path through the box"):
        client.wait_for_unit("multi-user.target")
        client.succeed("curl -sSf http://box:8501/nix-cache-info")
        client.fail(f"test -e {path}")
        client.succeed(f"nix-store --realise {path}")
        assert client.succeed(f"cat {path}").strip() == "${payload}"
        sigs = client.succeed(f"{nix} path-info --sigs {path}")
        assert "box-test-1:" in sigs, sigs

    with subtest("a client pushes a path with a write token"):
        pushed = client.succeed(
            "echo 'pushed by the client' > /tmp/cairn-vm-test-pushed"
            " && nix-store --add /tmp/cairn-vm-test-pushed"
        ).strip()
        client.succeed(f"{nix} copy --to http://box:8501 {pushed}")
        hash_part = pushed.removeprefix("/nix/store/").split("-")[0]
        box.succeed(f"curl -sSf http://127.0.0.1:8501/{hash_part}.narinfo")

    with subtest("the FUSE view is visible outside the service"):
        box.succeed("/run/booted-system/specialisation/fuse/bin/switch-to-configuration test")
        box.wait_for_unit("cairn.service")
        box.wait_until_succeeds("mountpoint -q /run/cairn/mnt", timeout=60)
        box.wait_until_succeeds(
            "runuser -u cairn -- grep -rqF '${payload}' /run/cairn/mnt", timeout=60
        )
  '';
}
