# Evaluates cairn's flake.nix with the stand-in nixpkgs, for
# nixos-module/module_test.go: what the package passes to buildGo126Module,
# that the flake's NixOS module brings its own package, and that the VM
# test's node configurations are valid for the modules (they cannot run
# without nixpkgs).
let
  lib = import ./stub-lib.nix;
  flake = import ../../flake.nix;
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "riscv64-linux" ]
      (system: import ./stub-pkgs.nix { inherit system; });
  };
  self = flake.outputs { inherit self nixpkgs; };
  pkgs = nixpkgs.legacyPackages.x86_64-linux;
  system = "x86_64-linux";

  eval = modules: import ./modules.nix { inherit lib pkgs modules; };
  package = self.packages.${system}.default;
  vm = self.checks.${system}.vm.test;
  box = eval [ vm.nodes.box ];
  client = eval [ vm.nodes.client ];
in
{
  inherit (flake) description;
  inputs = lib.mapAttrs (_: i: i.url) flake.inputs;
  systems = {
    packages = builtins.attrNames self.packages;
    devShells = builtins.attrNames self.devShells;
    checks = builtins.attrNames self.checks;
  };
  package = {
    inherit (package) pname version vendorHash subPackages ldflags doCheck postInstall env;
    meta = { inherit (package.meta) mainProgram; };
    nativeBuildInputs = map (p: p.pname) package.nativeBuildInputs;
  };
  devShell = map (p: p.pname) self.devShells.${system}.default.packages;
  packageOutPath = package.outPath;
  checkPackage = self.checks.${system}.package.outPath;
  moduleExecStart = (eval [ self.nixosModules.default { services.cairn.enable = true; } ])
    .config.systemd.services.cairn.serviceConfig.ExecStart;
  clientModuleSettings = (eval [
    self.nixosModules.client
    { services.cairn.client = { enable = true; url = "http://box:8501"; publicKey = "box-1:AAAA"; }; }
  ]).config.nix.settings;
  vm = {
    inherit (vm) name testScript;
    box = {
      inherit (box) failedAssertions;
      inherit (box.config.systemd.services.cairn.serviceConfig) ExecStart LoadCredential;
      firewallTCP = box.config.networking.firewall.allowedTCPPorts;
      fuseSpecialisation = box.config.specialisation.fuse.configuration.services.cairn.mount.enable;
    };
    client = {
      inherit (client) failedAssertions;
      inherit (client.config.nix.settings) substituters trusted-public-keys netrc-file;
    };
    boxPublicKey = builtins.readFile ./keys/box.public;
    upstreamPublicKey = builtins.readFile ./keys/upstream.public;
  };
}
