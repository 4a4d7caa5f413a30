// Package nixosmodule holds the tests of cairn's NixOS module and flake. They
// evaluate the Nix code with the real Nix evaluator against the stand-ins for
// nixpkgs' lib, packages and module system in test/, which are small enough
// to need no nixpkgs (test/modules.nix says what they model).
package nixosmodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

const (
	nixosKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
	// What %d, the credentials directory, expands to in cairn.service.
	credsDir = "/run/credentials/cairn.service"
)

// repoRoot is the repository's root, one level above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the tests expect to run in nixos-module/ of the repository")
	return root
}

func requireNixInstantiate(t *testing.T) {
	t.Helper()
	nixtest.RequireNix(t)
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Fatalf("nix-instantiate not found on PATH: these tests evaluate Nix code with the real Nix client; run `make deps` (apt-get install nix-bin)")
	}
}

// instantiate runs nix-instantiate in read-only mode, so that nothing the
// evaluation does can write to a store; it returns stdout, stderr and
// whether it succeeded.
func instantiate(t *testing.T, args ...string) (stdout, stderr string, ok bool) {
	t.Helper()
	requireNixInstantiate(t)
	cmd := exec.Command("nix-instantiate", append([]string{"--readonly-mode"}, args...)...)
	cmd.Env = nixtest.Env(t)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "running nix-instantiate")
	}
	return out.String(), errb.String(), err == nil
}

// evalJSON evaluates file strictly and decodes the JSON result into v.
func evalJSON(t *testing.T, v any, file string, args ...string) {
	t.Helper()
	stdout, stderr, ok := instantiate(t, append([]string{"--eval", "--strict", "--json", file}, args...)...)
	require.True(t, ok, "nix-instantiate --eval %s %s failed:\n%s", file, strings.Join(args, " "), stderr)
	require.NoError(t, json.Unmarshal([]byte(stdout), v), "decoding %s", stdout)
}

type service struct {
	Description   string
	WantedBy      []string
	Wants         []string
	After         []string
	Path          []string
	ServiceConfig map[string]any
}

type evaluation struct {
	FailedAssertions   []string
	Cairn              map[string]any
	Service            *service
	Tmpfiles           []string
	Users              map[string]any
	FirewallTCP        []int
	FuseUserAllowOther bool
	NixSettings        struct {
		Substituters      []string `json:"substituters"`
		TrustedPublicKeys []string `json:"trusted-public-keys"`
	}
	System      any
	PackagePath string
}

// evalModule evaluates the server module (which imports the client module)
// with cfg as the configuration; args go to nix-instantiate as they are.
func evalModule(t *testing.T, cfg map[string]any, args ...string) evaluation {
	t.Helper()
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	var ev evaluation
	evalJSON(t, &ev, "test/eval.nix", append([]string{"--argstr", "configJSON", string(js)}, args...)...)
	return ev
}

// evalModuleError evaluates what evalModule does, requires the evaluation to
// fail and returns Nix's error output.
func evalModuleError(t *testing.T, cfg map[string]any, args ...string) string {
	t.Helper()
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	stdout, stderr, ok := instantiate(t, append([]string{"--eval", "--strict", "--json", "test/eval.nix", "--argstr", "configJSON", string(js)}, args...)...)
	require.False(t, ok, "the evaluation should fail, but printed %s", stdout)
	return stderr
}

func cairnCfg(opts map[string]any) map[string]any {
	return map[string]any{"services": map[string]any{"cairn": opts}}
}

// execArgv splits an ExecStart= line as systemd does, for the syntax the
// module may emit: words separated by spaces, double-quoted words with C
// escapes, %% and $$ for a literal % and $, and the %d specifier. Any other
// specifier or $VARIABLE fails the test, since systemd would expand it.
func execArgv(t *testing.T, line string) []string {
	t.Helper()
	var argv []string
	for i := 0; i < len(line); {
		if line[i] == ' ' {
			i++
			continue
		}
		var word string
		if line[i] == '"' {
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' {
					j++
				}
			}
			require.Less(t, j, len(line), "unterminated quote in ExecStart %q", line)
			s, err := strconv.Unquote(line[i : j+1])
			require.NoError(t, err, "quoted word %s in ExecStart", line[i:j+1])
			word, i = s, j+1
			require.True(t, i == len(line) || line[i] == ' ', "quoted word followed by %q in ExecStart %q", line[i:], line)
		} else {
			j := strings.IndexByte(line[i:], ' ')
			if j < 0 {
				j = len(line) - i
			}
			require.NotContains(t, line[i:i+j], `"`, "stray quote in ExecStart %q", line)
			require.NotContains(t, line[i:i+j], `\`, "unquoted backslash in ExecStart %q", line)
			word, i = line[i:i+j], i+j
		}
		argv = append(argv, expandSpecifiers(t, word))
	}
	return argv
}

func expandSpecifiers(t *testing.T, s string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' && c != '$' {
			b.WriteByte(c)
			continue
		}
		require.Less(t, i+1, len(s), "lone %c at the end of %q", c, s)
		i++
		switch next := s[i]; {
		case next == c:
			b.WriteByte(c)
		case c == '%' && next == 'd':
			b.WriteString(credsDir)
		default:
			t.Fatalf("systemd would expand %c%c in ExecStart word %q", c, next, s)
		}
	}
	return b.String()
}

func TestNixFilesParse(t *testing.T) {
	root := repoRoot(t)
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "vendor" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".nix") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	require.NoError(t, err)
	for _, want := range []string{"flake.nix", "nixos-module/default.nix", "nixos-module/client.nix", "nixos-module/test/vm.nix"} {
		require.Contains(t, files, want)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			_, stderr, ok := instantiate(t, "--parse", filepath.Join(root, f))
			require.True(t, ok, "%s does not parse:\n%s", f, stderr)
		})
	}
}

func TestDefaults(t *testing.T) {
	ev := evalModule(t, cairnCfg(map[string]any{"enable": true}))
	require.Empty(t, ev.FailedAssertions)
	require.NotNil(t, ev.Service)

	require.Equal(t, []string{
		ev.PackagePath + "/bin/cairn", "serve",
		"--listen", "0.0.0.0:8501",
		"--data", "/var/lib/cairn",
		"--upstream", "https://cache.nixos.org?priority=40",
		"--trusted-key", nixosKey,
		"--prefetch=true",
		"--deltas=true",
		"--log-level", "info",
	}, execArgv(t, ev.Service.ServiceConfig["ExecStart"].(string)))

	sc := ev.Service.ServiceConfig
	require.Equal(t, "cairn", sc["User"])
	require.Equal(t, "cairn", sc["Group"])
	require.Equal(t, "cairn", sc["StateDirectory"])
	require.Empty(t, sc["LoadCredential"])
	require.Equal(t, "on-failure", sc["Restart"])
	require.Equal(t, []string{"multi-user.target"}, ev.Service.WantedBy)
	require.Contains(t, ev.Service.After, "network-online.target")
	require.Contains(t, ev.Service.Wants, "network-online.target")
	require.Len(t, ev.Service.Path, 1)
	require.True(t, strings.HasSuffix(ev.Service.Path[0], "-xz"), "path = %v", ev.Service.Path)

	require.Empty(t, ev.FirewallTCP, "openFirewall defaults to false")
	require.Empty(t, ev.Tmpfiles)
	require.False(t, ev.FuseUserAllowOther)
	require.Equal(t, map[string]any{
		"users":  map[string]any{"cairn": map[string]any{"isSystemUser": true, "group": "cairn", "description": "cairn binary cache"}},
		"groups": map[string]any{"cairn": map[string]any{}},
	}, ev.Users)
	require.Empty(t, ev.NixSettings.Substituters, "the server module does not make the box its own client")
}

func TestDisabled(t *testing.T) {
	ev := evalModule(t, cairnCfg(map[string]any{"listen": "127.0.0.1:1"}))
	require.Nil(t, ev.Service)
	require.Empty(t, ev.Users)
	require.Empty(t, ev.FirewallTCP)
	require.Empty(t, ev.FailedAssertions)
}

// secretFiles writes a signing key and a tokens file with recognisable
// contents and returns their paths and contents.
func secretFiles(t *testing.T) (keyPath, tokensPath string, contents []string) {
	t.Helper()
	dir := t.TempDir()
	keyPath, tokensPath = filepath.Join(dir, "signing-key"), filepath.Join(dir, "tokens")
	key, tokens := "box-1:c2VjcmV0LXNpZ25pbmcta2V5LW1hdGVyaWFs", "write s3cret-write-token\nadmin s3cret-admin-token\n"
	require.NoError(t, os.WriteFile(keyPath, []byte(key), 0o600))
	require.NoError(t, os.WriteFile(tokensPath, []byte(tokens), 0o600))
	return keyPath, tokensPath, []string{key, "s3cret-write-token", "s3cret-admin-token"}
}

func TestFullConfiguration(t *testing.T) {
	keyPath, tokensPath, secrets := secretFiles(t)
	ev := evalModule(t, cairnCfg(map[string]any{
		"enable":   true,
		"listen":   "[::]:9000",
		"dataDir":  "/var/lib/cairn-data",
		"keyName":  "box-1",
		"maxSize":  "200G",
		"prefetch": false,
		"deltas":   false,
		"logLevel": "debug",
		"upstreams": []any{
			map[string]any{"url": "https://cache.nixos.org", "priority": 40, "publicKeys": []string{nixosKey}},
			map[string]any{"url": "https://cache.example.org/?token=a", "priority": 10, "publicKeys": []string{"example-1:AAAA", "example-2:BBBB=="}},
			// The key repeats: cairn gets each key once.
			map[string]any{"url": "file:///media/seed", "publicKeys": []string{"example-1:AAAA"}},
		},
		"signingKeyFile": keyPath,
		"tokensFile":     tokensPath,
		"mount":          map[string]any{"enable": true},
		"extraArgs":      []string{"--note=two words", "100%", "$HOME", `say "hi"`, `back\slash`},
	}))
	require.Empty(t, ev.FailedAssertions)
	require.NotNil(t, ev.Service)
	sc := ev.Service.ServiceConfig

	require.Equal(t, []string{
		ev.PackagePath + "/bin/cairn", "serve",
		"--listen", "[::]:9000",
		"--data", "/var/lib/cairn-data",
		"--upstream", "https://cache.nixos.org?priority=40",
		"--upstream", "https://cache.example.org/?token=a&priority=10",
		"--upstream", "file:///media/seed?priority=50",
		"--trusted-key", nixosKey,
		"--trusted-key", "example-1:AAAA",
		"--trusted-key", "example-2:BBBB==",
		"--key-name", "box-1",
		"--max-size", "200G",
		"--mount", "/run/cairn/mnt",
		"--prefetch=false",
		"--deltas=false",
		"--log-level", "debug",
		"--signing-key-file", credsDir + "/signing-key",
		"--tokens-file", credsDir + "/tokens",
		"--note=two words", "100%", "$HOME", `say "hi"`, `back\slash`,
	}, execArgv(t, sc["ExecStart"].(string)))

	require.Equal(t, []any{"signing-key:" + keyPath, "tokens:" + tokensPath}, sc["LoadCredential"])
	require.Equal(t, "cairn-data", sc["StateDirectory"])
	require.Empty(t, ev.FirewallTCP, "openFirewall is off")

	// The secrets' paths reach the system only as LoadCredential entries,
	// and their contents not at all: the module never reads them.
	paths := stringLeaves(ev.System, "")
	for _, p := range []string{keyPath, tokensPath} {
		var where []string
		for at, s := range paths {
			if strings.Contains(s, p) {
				where = append(where, at)
			}
		}
		slices.Sort(where)
		require.Len(t, where, 1, "%s appears at %v", p, where)
		require.Regexp(t, `^systemd\.services\.cairn\.serviceConfig\.LoadCredential\[\d\]$`, where[0])
	}
	for _, secret := range secrets {
		for at, s := range paths {
			require.NotContains(t, s, secret, "secret content at %s", at)
		}
	}
}

// stringLeaves maps the JSON path of every string in v to the string.
func stringLeaves(v any, at string) map[string]string {
	out := map[string]string{}
	switch v := v.(type) {
	case string:
		out[at] = v
	case []any:
		for i, e := range v {
			for k, s := range stringLeaves(e, fmt.Sprintf("%s[%d]", at, i)) {
				out[k] = s
			}
		}
	case map[string]any:
		for name, e := range v {
			sub := name
			if at != "" {
				sub = at + "." + name
			}
			for k, s := range stringLeaves(e, sub) {
				out[k] = s
			}
		}
	}
	return out
}

func TestFirewall(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   map[string]any
		expect []int
	}{
		{"closed by default", map[string]any{}, nil},
		{"closed with a custom listen", map[string]any{"listen": "0.0.0.0:9000"}, nil},
		{"open on the default port", map[string]any{"openFirewall": true}, []int{8501}},
		{"open on an IPv6 listen's port", map[string]any{"openFirewall": true, "listen": "[::]:9000"}, []int{9000}},
		{"open on a host:port listen's port", map[string]any{"openFirewall": true, "listen": "cache.lan:80"}, []int{80}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts["enable"] = true
			ev := evalModule(t, cairnCfg(tc.opts))
			if tc.expect == nil {
				require.Empty(t, ev.FirewallTCP)
			} else {
				require.Equal(t, tc.expect, ev.FirewallTCP)
			}
		})
	}
}

// namespacing are the settings that give the unit a mount namespace, which
// would hide a FUSE mount from the host.
var namespacing = []string{
	"PrivateTmp", "ProtectSystem", "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
	"ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ReadWritePaths", "ReadOnlyPaths",
	"InaccessiblePaths", "BindPaths", "TemporaryFileSystem", "PrivateMounts", "MountFlags", "DynamicUser",
}

func TestSandbox(t *testing.T) {
	// Hardening that applies with and without the FUSE view.
	always := map[string]any{
		"NoNewPrivileges": true, "LockPersonality": true, "MemoryDenyWriteExecute": true,
		"RestrictNamespaces": true, "RestrictRealtime": true, "RestrictSUIDSGID": true,
		"ProtectClock": true, "ProtectHostname": true, "RemoveIPC": true, "SystemCallArchitectures": "native",
		"RestrictAddressFamilies": []any{"AF_INET", "AF_INET6", "AF_UNIX"}, "UMask": "0077",
	}

	t.Run("without the FUSE view", func(t *testing.T) {
		ev := evalModule(t, cairnCfg(map[string]any{"enable": true}))
		sc := ev.Service.ServiceConfig
		for k, v := range always {
			require.Equal(t, v, sc[k], k)
		}
		for k, v := range map[string]any{
			"CapabilityBoundingSet": "", "PrivateDevices": true, "PrivateTmp": true, "ProtectSystem": "strict",
			"ProtectHome": true, "ProtectKernelTunables": true, "ProtectKernelModules": true,
			"ProtectKernelLogs": true, "ProtectControlGroups": true, "ProtectProc": "invisible",
			"SystemCallFilter": []any{"@system-service", "~@privileged", "~@resources"},
		} {
			require.Equal(t, v, sc[k], k)
		}
		for _, k := range []string{"AmbientCapabilities", "DeviceAllow", "DevicePolicy", "RuntimeDirectory", "ExecStopPost"} {
			require.NotContains(t, sc, k)
		}
		require.NotContains(t, strings.Join(ev.Service.Path, " "), "fuse3")
		require.NotContains(t, sc["ExecStart"], "--mount")
		require.False(t, ev.FuseUserAllowOther)
	})

	t.Run("with the FUSE view", func(t *testing.T) {
		ev := evalModule(t, cairnCfg(map[string]any{"enable": true, "mount": map[string]any{"enable": true}}))
		sc := ev.Service.ServiceConfig
		for k, v := range always {
			require.Equal(t, v, sc[k], k)
		}
		for k, v := range map[string]any{
			"AmbientCapabilities":   []any{"CAP_SYS_ADMIN"},
			"CapabilityBoundingSet": []any{"CAP_SYS_ADMIN"},
			"PrivateDevices":        false,
			"DevicePolicy":          "closed",
			"DeviceAllow":           []any{"/dev/fuse rw"},
			"RuntimeDirectory":      "cairn/mnt",
			"RuntimeDirectoryMode":  "0755",
			"SystemCallFilter":      []any{"@system-service", "~@privileged", "~@resources", "@mount", "setfsuid", "setfsgid"},
		} {
			require.Equal(t, v, sc[k], k)
		}
		for _, k := range namespacing {
			require.NotContains(t, sc, k, "%s would hide the mount from the host", k)
		}
		require.Regexp(t, `^-\+/nix/store/[^ ]+-fuse3/bin/fusermount3 -u -z /run/cairn/mnt$`, sc["ExecStopPost"])
		require.Contains(t, strings.Join(ev.Service.Path, " "), "-fuse3")
		require.True(t, ev.FuseUserAllowOther)
		require.Equal(t, "cairn", sc["StateDirectory"], "the data directory does not depend on the view")
	})
}

func TestDirectoriesOutsideSystemdDirectories(t *testing.T) {
	ev := evalModule(t, cairnCfg(map[string]any{"enable": true, "dataDir": "/srv/cairn"}))
	sc := ev.Service.ServiceConfig
	require.NotContains(t, sc, "StateDirectory")
	require.Equal(t, []any{"/srv/cairn"}, sc["ReadWritePaths"], "ProtectSystem=strict would make it read-only")
	require.Equal(t, []string{"d /srv/cairn 0700 cairn cairn - -"}, ev.Tmpfiles)
	require.Contains(t, execArgv(t, sc["ExecStart"].(string)), "/srv/cairn")

	ev = evalModule(t, cairnCfg(map[string]any{"enable": true, "dataDir": "/srv/cairn", "mount": map[string]any{"enable": true, "path": "/srv/view"}}))
	sc = ev.Service.ServiceConfig
	require.NotContains(t, sc, "RuntimeDirectory")
	require.NotContains(t, sc, "ReadWritePaths")
	require.Equal(t, []string{"d /srv/cairn 0700 cairn cairn - -", "d /srv/view 0755 cairn cairn - -"}, ev.Tmpfiles)
	argv := execArgv(t, sc["ExecStart"].(string))
	i := slices.Index(argv, "--mount")
	require.Positive(t, i)
	require.Equal(t, "/srv/view", argv[i+1])
}

func TestAssertions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   map[string]any
		args   []string
		expect string
	}{
		{"tokens file in the store", map[string]any{"tokensFile": "/nix/store/00000000000000000000000000000000-tokens"}, nil,
			"services.cairn.tokensFile is in the Nix store"},
		{"signing key in the store", map[string]any{"signingKeyFile": "/nix/store/00000000000000000000000000000000-key"}, nil,
			"services.cairn.signingKeyFile is in the Nix store"},
		{"no package", map[string]any{}, []string{"--arg", "withPackage", "false"},
			"services.cairn.package is not set"},
		{"no upstream", map[string]any{"upstreams": []any{}}, nil,
			"services.cairn.upstreams is empty"},
		{"no upstream key", map[string]any{"upstreams": []any{map[string]any{"url": "file:///media/seed"}}}, nil,
			"services.cairn.upstreams have no publicKeys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts["enable"] = true
			var failed []string
			js, err := json.Marshal(cairnCfg(tc.opts))
			require.NoError(t, err)
			evalJSON(t, &failed, "test/eval.nix", append([]string{"-A", "failedAssertions", "--argstr", "configJSON", string(js)}, tc.args...)...)
			require.Len(t, failed, 1)
			require.Contains(t, failed[0], tc.expect)
		})
	}
}

// TestOptionTypes checks that definitions NixOS would reject are rejected,
// in particular that a secret cannot be given as a Nix path, which would
// copy it into the world-readable store.
func TestOptionTypes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   map[string]any
		extra  string
		expect string
	}{
		{"tokens file as a Nix path", nil, `{ services.cairn.tokensFile = /etc/hostname; }`,
			"The option `services.cairn.tokensFile' is defined as the path /etc/hostname, which is not of type nullOr"},
		{"signing key as a Nix path", nil, `{ services.cairn.signingKeyFile = /etc/hostname; }`,
			"The option `services.cairn.signingKeyFile' is defined as the path /etc/hostname"},
		{"relative tokens file", map[string]any{"tokensFile": "tokens"}, "", "services.cairn.tokensFile' is defined as \"tokens\""},
		{"unknown log level", map[string]any{"logLevel": "verbose"}, "", "services.cairn.logLevel' is defined as \"verbose\", which is not of type enum"},
		{"listen without a port", map[string]any{"listen": "0.0.0.0"}, "", "services.cairn.listen' is defined as \"0.0.0.0\""},
		{"upstream without a URL", map[string]any{"upstreams": []any{map[string]any{"priority": 1}}}, "",
			"The option `services.cairn.upstreams.url' is used but not defined."},
		{"malformed upstream key", map[string]any{"upstreams": []any{map[string]any{"url": "https://c.example", "publicKeys": []string{"no-name"}}}}, "",
			"services.cairn.upstreams.publicKeys' is defined as a list"},
		{"misspelt option", map[string]any{"openFirewal": true}, "", "The option `services.cairn.openFirewal' does not exist."},
		{"misspelt mount option", map[string]any{"mount": map[string]any{"enabled": true}}, "", "The option `services.cairn.mount.enabled' does not exist."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := map[string]any{"enable": true}
			for k, v := range tc.opts {
				opts[k] = v
			}
			var args []string
			if tc.extra != "" {
				args = []string{"--arg", "extra", tc.extra}
			}
			stderr := evalModuleError(t, cairnCfg(opts), append(args, "-A", "cairn")...)
			require.Contains(t, stderr, tc.expect)
		})
	}
}

func TestClientModule(t *testing.T) {
	const key = "box-1:1d08SCQbX+KEzx+Pg7HAlVkgd52FTrjYLEWZm2ieM6A="
	client := map[string]any{"client": map[string]any{"enable": true, "url": "http://box:8501", "publicKey": key}}

	for _, server := range []bool{false, true} {
		t.Run(fmt.Sprintf("server module imported: %v", server), func(t *testing.T) {
			ev := evalModule(t, cairnCfg(client), "--arg", "server", strconv.FormatBool(server))
			require.Empty(t, ev.FailedAssertions)
			require.Equal(t, []string{"http://box:8501"}, ev.NixSettings.Substituters)
			require.Equal(t, []string{key}, ev.NixSettings.TrustedPublicKeys)
			require.Nil(t, ev.Service, "a client runs no cairn")
		})
	}

	t.Run("disabled", func(t *testing.T) {
		ev := evalModule(t, cairnCfg(map[string]any{"client": map[string]any{"url": "http://box:8501"}}), "--arg", "server", "false")
		require.Empty(t, ev.NixSettings.Substituters)
		require.Empty(t, ev.NixSettings.TrustedPublicKeys)
	})

	t.Run("malformed key", func(t *testing.T) {
		stderr := evalModuleError(t, cairnCfg(map[string]any{"client": map[string]any{"enable": true, "url": "http://box:8501", "publicKey": "box-1"}}),
			"--arg", "server", "false", "-A", "nixSettings")
		require.Contains(t, stderr, "services.cairn.client.publicKey' is defined as \"box-1\"")
	})
}

func TestFlake(t *testing.T) {
	var f struct {
		Inputs  map[string]string
		Systems map[string][]string
		Package struct {
			Pname             string
			Version           string
			VendorHash        string
			SubPackages       []string
			Ldflags           []string
			DoCheck           bool
			PostInstall       string
			Env               map[string]any
			Meta              map[string]any
			NativeBuildInputs []string
		}
		PackageOutPath       string
		CheckPackage         string
		DevShell             []string
		ModuleExecStart      string
		ClientModuleSettings map[string][]string
		VM                   struct {
			Name       string
			TestScript string
			Box        struct {
				FailedAssertions   []string
				ExecStart          string
				LoadCredential     []string
				FirewallTCP        []int
				FuseSpecialisation bool
			}
			Client struct {
				FailedAssertions  []string
				Substituters      []string
				TrustedPublicKeys []string `json:"trusted-public-keys"`
				NetrcFile         string   `json:"netrc-file"`
			}
			BoxPublicKey      string
			UpstreamPublicKey string
		}
	}
	evalJSON(t, &f, "test/eval-flake.nix")

	require.Contains(t, f.Inputs["nixpkgs"], "github:NixOS/nixpkgs/")
	for _, output := range []string{"packages", "devShells", "checks"} {
		require.Equal(t, []string{"aarch64-linux", "x86_64-linux"}, f.Systems[output], output)
	}

	p := f.Package
	require.Equal(t, "cairn", p.Pname)
	require.Regexp(t, `^sha256-[A-Za-z0-9+/]{43}=$`, p.VendorHash)
	require.Equal(t, []string{"cmd/cairn"}, p.SubPackages)
	require.Equal(t, map[string]any{"CGO_ENABLED": float64(1)}, p.Env)
	require.Equal(t, []string{"-s", "-w", "-X main.version=" + p.Version}, p.Ldflags)
	require.False(t, p.DoCheck)
	require.Equal(t, "cairn", p.Meta["mainProgram"])
	require.Contains(t, p.NativeBuildInputs, "make-wrapper-hook")
	require.Regexp(t, `^wrapProgram \$out/bin/cairn --suffix PATH : /nix/store/\S+-xz/bin:/nix/store/\S+-fuse3/bin\s*$`, p.PostInstall)
	require.Equal(t, f.PackageOutPath, f.CheckPackage, "checks.package builds the package")
	for _, tool := range []string{"go", "nix", "fuse3", "xz", "wrk"} {
		require.Contains(t, f.DevShell, tool)
	}

	// nixosModules.default brings the flake's own package.
	require.Equal(t, f.PackageOutPath+"/bin/cairn", execArgv(t, f.ModuleExecStart)[0])
	require.Equal(t, map[string][]string{"substituters": {"http://box:8501"}, "trusted-public-keys": {"box-1:AAAA"}}, f.ClientModuleSettings)

	// The VM test's nodes are valid configurations of the modules.
	require.Equal(t, "cairn", f.VM.Name)
	box := f.VM.Box
	require.Empty(t, box.FailedAssertions)
	argv := execArgv(t, box.ExecStart)
	require.Equal(t, f.PackageOutPath+"/bin/cairn", argv[0])
	require.Subset(t, argv, []string{"file:///var/lib/upstream-cache?priority=10", f.VM.UpstreamPublicKey, credsDir + "/signing-key", credsDir + "/tokens"})
	require.Equal(t, []string{"signing-key:/etc/cairn-test/box.secret", "tokens:/etc/cairn-test/tokens"}, box.LoadCredential)
	require.Equal(t, []int{8501}, box.FirewallTCP)
	require.True(t, box.FuseSpecialisation)
	require.Empty(t, f.VM.Client.FailedAssertions)
	require.Equal(t, []string{"http://box:8501"}, f.VM.Client.Substituters)
	require.Equal(t, []string{f.VM.BoxPublicKey}, f.VM.Client.TrustedPublicKeys)
	require.Equal(t, "/etc/nix/netrc", f.VM.Client.NetrcFile)
	require.Contains(t, f.VM.TestScript, f.VM.BoxPublicKey, "the test checks /pubkey against the key the client trusts")
	require.Regexp(t, `^box-test-1:[A-Za-z0-9+/]{43}=$`, f.VM.BoxPublicKey)
	require.Regexp(t, `^upstream-test-1:[A-Za-z0-9+/]{43}=$`, f.VM.UpstreamPublicKey)
}
