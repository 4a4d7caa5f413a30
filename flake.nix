{
  description = "cairn, a Nix binary cache appliance";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = "0.1.0";
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.buildGo126Module {
          pname = "cairn";
          inherit version;
          src = ./.;
          # The NAR hash of what `go mod vendor` writes. It changes whenever
          # go.mod or the imported packages do; nixos-module/vendorhash_test.go
          # recomputes it and fails with the new value.
          vendorHash = "sha256-sUYcz0fZSHNxOrvPkQ9iq0U3EltKCXbRJ9J07KBJWfg=";
          subPackages = [ "cmd/cairn" ];
          # cgo for two things: the background recompressor packs frames
          # with libzstd (DataDog/zstd builds its bundled C sources), which
          # makes them 7% smaller than pure Go's best, and xz NARs are
          # decoded by liblzma in-process, which saves xz's pipe. go-fuse
          # needs no cgo.
          env.CGO_ENABLED = 1;
          buildInputs = [ pkgs.xz ];
          ldflags = [ "-s" "-w" "-X main.version=${version}" ];
          nativeBuildInputs = [ pkgs.makeWrapper ];
          # xz decodes upstream NARs several times faster than the pure-Go
          # fallback, and fusermount3 mounts the FUSE view for a cairn that
          # cannot mount by itself. Suffixed, so that a system's own
          # fusermount3 (setuid on NixOS and most distributions) wins.
          postInstall = ''
            wrapProgram $out/bin/cairn --suffix PATH : ${lib.makeBinPath [ pkgs.xz pkgs.fuse3 ]}
          '';
          # The tests need the real Nix client, a FUSE device and fixtures
          # built with nix, none of which the build sandbox has; `make test`
          # runs them.
          doCheck = false;
          meta = {
            description = "Nix binary cache appliance: pull-through proxy, push target, FUSE view and seed drives";
            mainProgram = "cairn";
            platforms = lib.platforms.linux;
          };
        };
      });

      nixosModules = {
        default = { lib, pkgs, ... }: {
          imports = [ ./nixos-module ];
          services.cairn.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
        client = ./nixos-module/client.nix;
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [ pkgs.go_1_26 pkgs.nix pkgs.fuse3 pkgs.xz pkgs.zstd pkgs.bzip2 pkgs.wrk ];
        };
      });

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        vm = pkgs.testers.runNixOSTest (import ./nixos-module/test/vm.nix { inherit self; });
      });
    };
}
