# A stand-in for nixpkgs' package set: packages are attribute sets with a
# made-up store path, and the builders return their arguments with one, so
# that the tests can look at what cairn's flake passes to them. Nothing here
# builds anything.
{ system ? "x86_64-linux" }:
let
  lib = import ./stub-lib.nix;
  storePath = name: "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" "${system}-${name}")}-${name}";
  package = name: { inherit name; pname = name; outPath = storePath name; };
  built = args: args // {
    name = args.name or "${args.pname}-${args.version}";
    outPath = storePath (args.name or "${args.pname}-${args.version}");
  };
in
{
  inherit lib system;
  stdenv.hostPlatform.system = system;

  xz = package "xz";
  fuse3 = package "fuse3";
  go_1_26 = package "go";
  nix = package "nix";
  wrk = package "wrk";
  zstd = package "zstd";
  bzip2 = package "bzip2";
  curl = package "curl";
  makeWrapper = package "make-wrapper-hook";

  # The module's default for services.cairn.package is `pkgs.cairn or null`,
  # so the stub has no `cairn`; eval.nix passes this one instead.
  cairnStub = package "cairn-stub";

  buildGo126Module = built;
  mkShell = args: built ({ name = "nix-shell"; } // args);
  testers.runNixOSTest = test: built { name = "vm-test-run-${test.name}"; } // { inherit test; };
}
