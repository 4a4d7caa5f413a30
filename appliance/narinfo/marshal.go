package narinfo

import (
	"strconv"
	"strings"
)

// Marshal returns the narinfo text, fields in the order Nix writes them.
func (i *Info) Marshal() []byte {
	b := make([]byte, 0, 512+64*len(i.References))
	line := func(k, v string) {
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, '\n')
	}
	line("StorePath", i.StorePath)
	line("URL", i.URL)
	if i.Compression == "" {
		line("Compression", "bzip2") // what an absent field meant
	} else {
		line("Compression", i.Compression)
	}
	if i.FileHash != "" {
		line("FileHash", i.FileHash)
	}
	if i.FileSize > 0 {
		line("FileSize", strconv.FormatUint(i.FileSize, 10))
	}
	line("NarHash", FormatNarHash(i.NarHash))
	line("NarSize", strconv.FormatUint(i.NarSize, 10))
	line("References", strings.Join(i.References, " "))
	if i.Deriver != "" {
		line("Deriver", i.Deriver)
	}
	if i.System != "" {
		line("System", i.System)
	}
	for _, s := range i.Sigs {
		line("Sig", s)
	}
	if i.CA != "" {
		line("CA", i.CA)
	}
	return b
}
