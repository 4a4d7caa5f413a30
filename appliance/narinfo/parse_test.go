package narinfo_test

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
)

// nixNarinfo was written by `nix copy` (Nix 2.8) to a file:// cache.
const nixNarinfo = `StorePath: /nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top
URL: nar/1v0ya4f05rp5sss77a126pcryg931i3259kx8gzb90bfrr8crx52.nar.xz
Compression: xz
FileHash: sha256:1v0ya4f05rp5sss77a126pcryg931i3259kx8gzb90bfrr8crx52
FileSize: 204
NarHash: sha256:1i0ixmlqyk6pybial1yvynwji9y2hlhss039qc73wnxqznyglp3k
NarSize: 208
References: 6ldnmwll63a57j27m06jbs58kdqq9q3w-b mwq47shl5x56hf8wz24fkh24l9ckb0bp-a
Sig: t:7+gzfd2Y1SLik+EWToef84CwPEriSZDJlrpresdOeZav+zuUTPzY8rkRUABGKt9S6qe/nmzFOSgRXjZYVrglDQ==
CA: text:sha256:05qb2yrz8agwm7j783dvfm4ff6yh66wkhnnl5j6vprwdzlz1a2ns
`

// nixosNarinfo is from cache.nixos.org, signed by nixosKey.
const nixosNarinfo = `StorePath: /nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin
URL: nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz
Compression: xz
FileHash: sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56
FileSize: 68852
NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0
NarSize: 196040
References: 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0 6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115 j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12 yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n
Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv
Sig: cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==
`

// nixosKey is cache.nixos.org's public key.
const nixosKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="

// The NarHash of nixNarinfo, in each encoding Nix accepts.
const (
	topHex   = "735cfabcfdb85b3e0ec36900ad2185c2a728b9f5db07aae2f2d74c8f69ed11c4"
	topNix32 = "sha256:1i0ixmlqyk6pybial1yvynwji9y2hlhss039qc73wnxqznyglp3k"
	topSRI   = "sha256-c1z6vP24Wz4Ow2kArSGFwqcoufXbB6ri8tdMj2ntEcQ="
)

// Lines of a minimal valid narinfo, for building variants.
const (
	spLine = "StorePath: /nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top"
	urlLn  = "URL: nar/x.nar"
	nhLine = "NarHash: " + topNix32
	nsLine = "NarSize: 208"
)

// lines joins narinfo lines, each ending in "\n".
func lines(l ...string) []byte {
	return []byte(strings.Join(l, "\n") + "\n")
}

// sha decodes a hex sha256.
func sha(t *testing.T, h string) [32]byte {
	b, err := hex.DecodeString(h)
	require.NoError(t, err)
	require.Len(t, b, 32)
	return [32]byte(b)
}

func TestParse(t *testing.T) {
	top := sha(t, topHex)
	minimal := narinfo.Info{StorePath: "/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top", URL: "nar/x.nar", NarHash: top, NarSize: 208}
	with := func(f func(*narinfo.Info)) narinfo.Info { i := minimal; f(&i); return i }
	for _, tc := range []struct {
		name string
		in   string
		want narinfo.Info
	}{
		{"nix", nixNarinfo, narinfo.Info{
			StorePath:   "/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top",
			URL:         "nar/1v0ya4f05rp5sss77a126pcryg931i3259kx8gzb90bfrr8crx52.nar.xz",
			Compression: "xz",
			FileHash:    "sha256:1v0ya4f05rp5sss77a126pcryg931i3259kx8gzb90bfrr8crx52",
			FileSize:    204,
			NarHash:     top,
			NarSize:     208,
			References:  []string{"6ldnmwll63a57j27m06jbs58kdqq9q3w-b", "mwq47shl5x56hf8wz24fkh24l9ckb0bp-a"},
			Sigs:        []string{"t:7+gzfd2Y1SLik+EWToef84CwPEriSZDJlrpresdOeZav+zuUTPzY8rkRUABGKt9S6qe/nmzFOSgRXjZYVrglDQ=="},
			CA:          "text:sha256:05qb2yrz8agwm7j783dvfm4ff6yh66wkhnnl5j6vprwdzlz1a2ns",
		}},
		{"minimal", string(lines(spLine, urlLn, nhLine, nsLine)), minimal},
		{"crlf, blank lines, unknown keys, no final newline",
			"\r\n" + spLine + "\r\n\r\nFoo: bar\r\n" + urlLn + "\n\n" + nhLine + "\r\nX-Whatever: 1\r\n" + nsLine, minimal},
		{"hex NarHash", string(lines(spLine, urlLn, "NarHash: sha256:"+topHex, nsLine)), minimal},
		{"SRI NarHash", string(lines(spLine, urlLn, "NarHash: "+topSRI, nsLine)), minimal},
		{"empty References", string(lines(spLine, urlLn, nhLine, nsLine, "References: ")), minimal},
		{"References with extra spaces", string(lines(spLine, urlLn, nhLine, nsLine, "References:  6ldnmwll63a57j27m06jbs58kdqq9q3w-b  mwq47shl5x56hf8wz24fkh24l9ckb0bp-a ")),
			with(func(i *narinfo.Info) {
				i.References = []string{"6ldnmwll63a57j27m06jbs58kdqq9q3w-b", "mwq47shl5x56hf8wz24fkh24l9ckb0bp-a"}
			})},
		{"unknown-deriver", string(lines(spLine, urlLn, nhLine, nsLine, "Deriver: unknown-deriver")), minimal},
		{"deriver and system", string(lines(spLine, urlLn, nhLine, nsLine, "Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv", "System: x86_64-linux")),
			with(func(i *narinfo.Info) {
				i.Deriver, i.System = "5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv", "x86_64-linux"
			})},
		{"absolute URL with query", string(lines(spLine, "URL: https://example.org/nar/abc.nar.zst?token=1&x=y", nhLine, nsLine, "Compression: zstd")),
			with(func(i *narinfo.Info) {
				i.URL, i.Compression = "https://example.org/nar/abc.nar.zst?token=1&x=y", "zstd"
			})},
		{"Sig repeats, order kept", string(lines(spLine, urlLn, nhLine, nsLine, "Sig: b:AAAA", "Sig: a:AAAA")),
			with(func(i *narinfo.Info) { i.Sigs = []string{"b:AAAA", "a:AAAA"} })},
		{"at the length limits", string(lines(spLine, "URL: "+strings.Repeat("u", 4096), nhLine, nsLine,
			"Sig: kkk:"+strings.Repeat("A", 1020), "CA: "+strings.Repeat("c", 1024))),
			with(func(i *narinfo.Info) {
				i.URL, i.Sigs, i.CA = strings.Repeat("u", 4096), []string{"kkk:" + strings.Repeat("A", 1020)}, strings.Repeat("c", 1024)
			})},
		{"exactly MaxSize", string(padTo(lines(spLine, urlLn, nhLine, nsLine), narinfo.MaxSize)), minimal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := narinfo.Parse([]byte(tc.in))
			require.NoError(t, err)
			require.Equal(t, tc.want, *got)
		})
	}
}

// padTo appends an unknown field so that b is exactly n bytes long.
func padTo(b []byte, n int) []byte {
	pad := "Pad: "
	return append(b, pad+strings.Repeat("x", n-len(b)-len(pad)-1)+"\n"...)
}

// badCases are narinfos Parse must reject, each with a word the error must contain.
func badCases() []struct{ name, in, msg string } {
	n := func(l ...string) string { return string(lines(l...)) }
	withSP := func(p string) string { return n("StorePath: "+p, urlLn, nhLine, nsLine) }
	withNH := func(h string) string { return n(spLine, urlLn, "NarHash: "+h, nsLine) }
	withNS := func(s string) string { return n(spLine, urlLn, nhLine, "NarSize: "+s) }
	plus := func(l ...string) string { return n(append([]string{spLine, urlLn, nhLine, nsLine}, l...)...) }
	many := func(line string, k int) []string {
		out := make([]string, k)
		for j := range out {
			out[j] = line
		}
		return out
	}
	return []struct{ name, in, msg string }{
		{"empty", "", "StorePath"},
		{"too large", string(padTo(lines(spLine, urlLn, nhLine, nsLine), narinfo.MaxSize+1)), "exceeds"},
		{"line without colon-space", plus("StorePath:/nix/store/x"), "line 5"},
		{"garbage line", plus("garbage"), "line 5"},
		{"too many lines", plus(many("X: y", 61)...), "lines"},
		{"missing StorePath", n(urlLn, nhLine, nsLine), "StorePath"},
		{"missing URL", n(spLine, nhLine, nsLine), "URL"},
		{"missing NarHash", n(spLine, urlLn, nsLine), "NarHash"},
		{"missing NarSize", n(spLine, urlLn, nhLine), "NarSize"},
		{"repeated StorePath", plus(spLine), "StorePath: repeated"},
		{"repeated NarSize", plus(nsLine), "NarSize: repeated"},
		{"repeated References", plus("References: ", "References: "), "References: repeated"},
		{"repeated Compression", plus("Compression: xz", "Compression: xz"), "Compression: repeated"},
		{"StorePath outside store", withSP("/gnu/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top"), "StorePath"},
		{"StorePath short hash", withSP("/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7-top"), "StorePath"},
		{"StorePath hash not nix32", withSP("/nix/store/ey5kzzppknabn46zidarq9sg7a08ff7a-top"), "StorePath"},
		{"StorePath no dash", withSP("/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a_top"), "StorePath"},
		{"StorePath empty name", withSP("/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-"), "StorePath"},
		{"StorePath dot name", withSP("/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-.top"), "StorePath"},
		{"StorePath slash", withSP("/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top/bin"), "StorePath"},
		{"StorePath name too long", withSP("/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-" + strings.Repeat("a", 212)), "StorePath"},
		{"URL empty", n(spLine, "URL: ", nhLine, nsLine), "URL"},
		{"URL with space", n(spLine, "URL: nar/a b.nar", nhLine, nsLine), "URL"},
		{"URL with tab", n(spLine, "URL: nar/a\tb.nar", nhLine, nsLine), "URL"},
		{"URL too long", n(spLine, "URL: "+strings.Repeat("a", 4097), nhLine, nsLine), "URL"},
		{"NarHash md5", withNH("md5:00000000000000000000000000000000"), "NarHash"},
		{"NarHash short", withNH(topNix32[:len(topNix32)-1]), "NarHash"},
		{"NarHash bad nix32", withNH("sha256:e" + topNix32[8:]), "NarHash"},
		{"NarHash bad hex", withNH("sha256:" + strings.Repeat("g", 64)), "NarHash"},
		{"NarHash bad SRI", withNH("sha256-" + topSRI[8:]), "NarHash"},
		{"NarHash sha512", withNH("sha512-" + strings.Repeat("A", 86) + "=="), "NarHash"},
		{"NarSize zero", withNS("0"), "NarSize"},
		{"NarSize negative", withNS("-1"), "NarSize"},
		{"NarSize plus", withNS("+5"), "NarSize"},
		{"NarSize text", withNS("abc"), "NarSize"},
		{"NarSize overflow", withNS("18446744073709551616"), "NarSize"},
		{"FileSize text", plus("FileSize: 1k"), "FileSize"},
		{"Reference bad", plus("References: 6ldnmwll63a57j27m06jbs58kdqq9q3w-b nope"), "References"},
		{"Reference full path", plus("References: /nix/store/6ldnmwll63a57j27m06jbs58kdqq9q3w-b"), "References"},
		{"Deriver not drv", plus("Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl"), "Deriver"},
		{"Deriver bad", plus("Deriver: x.drv"), "Deriver"},
		{"Deriver empty", plus("Deriver: "), "Deriver"},
		{"Sig no colon", plus("Sig: abc"), "Sig"},
		{"Sig empty name", plus("Sig: :AAAA"), "Sig"},
		{"Sig empty data", plus("Sig: k:"), "Sig"},
		{"Sig not base64", plus("Sig: k:not base64!"), "Sig"},
		{"Sig too long", plus("Sig: k:" + strings.Repeat("A", 1024)), "Sig"},
		{"too many Sigs", plus(many("Sig: k:AAAA", 61)...), "lines"},
		{"CA too long", plus("CA: " + strings.Repeat("a", 1025)), "CA"},
		{"control char", plus("System: x86\x01"), "System"},
		{"carriage return inside", plus("Compression: xz\r\r"), "Compression"},
	}
}

func TestParseBad(t *testing.T) {
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := narinfo.Parse([]byte(tc.in))
			require.ErrorIs(t, err, narinfo.ErrBad)
			require.Contains(t, err.Error(), tc.msg)
			require.NotContains(t, err.Error(), "\n")
		})
	}
}

func TestMarshal(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"nix output unchanged", nixNarinfo, nixNarinfo},
		{"cache.nixos.org unchanged", nixosNarinfo, nixosNarinfo},
		{"defaults and canonical order", string(lines("CA: fixed:r:sha256:x", "Sig: k:AAAA", nsLine, "System: s", "NarHash: "+topSRI, spLine,
			"Deriver: unknown-deriver", "FileSize: 0", urlLn)),
			string(lines(spLine, urlLn, "Compression: bzip2", nhLine, nsLine, "References: ", "System: s", "Sig: k:AAAA", "CA: fixed:r:sha256:x"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, err := narinfo.Parse([]byte(tc.in))
			require.NoError(t, err)
			require.Equal(t, tc.want, string(i.Marshal()))
		})
	}
}

func TestHash(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top", "3y5kzzppknabn46zidarq9sg7a08ff7a"},
		{"/nix/store/short", ""},
		{"", ""},
	} {
		require.Equal(t, tc.want, (&narinfo.Info{StorePath: tc.path}).Hash(), tc.path)
	}
}
