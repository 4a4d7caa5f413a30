package cdc_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

// ltMinEntryBytes is a lower bound on the NAR bytes each entry after the
// root takes: "entry" "(" "name" <name> "node" "(" "type" "directory" ")" ")",
// ten strings of at least 16 bytes each.
const ltMinEntryBytes = 152

// FuzzListingParser checks that the parser never panics, that its memory is
// bounded by its input, that how the input is split into writes does not
// matter, and that accepted NARs round-trip through the `.ls` JSON.
func FuzzListingParser(f *testing.F) {
	sample, _ := ltSample()
	f.Add(sample)
	f.Add(ltArchive(ltFile("", false)))
	f.Add(ltArchive(ltFile("hello", true)))
	f.Add(ltArchive(ltLink("/nix/store/x")))
	f.Add(ltArchive(ltDir()))
	f.Add(ltArchive(ltDir("a\x01\"\\\n\xff", ltDir("b", ltLink("t\x00"), "c", ltFile("12345678", false)))))
	f.Add(ltArchive(ltDir("a", ltFile("", false), "b", ltFile("", false)))[:200])
	f.Add(ltArchive(ltDir("b", ltFile("", false), "a", ltFile("", false))))
	f.Fuzz(func(t *testing.T, nar []byte) {
		whole, n, errWhole := ltParse(nar, ltFixed(len(nar)+1))
		require.LessOrEqual(t, len(whole), len(nar)/ltMinEntryBytes+1, "entries bounded by input")
		step := 1
		if len(nar) > 0 {
			step = int(nar[len(nar)-1])%13 + 1
		}
		pieces, _, errPieces := ltParse(nar, ltFixed(step))
		require.Equal(t, errWhole == nil, errPieces == nil, "whole: %v, in %d-byte pieces: %v", errWhole, step, errPieces)
		if errWhole != nil {
			require.True(t, errors.Is(errWhole, cdc.ErrBadNAR), "%v", errWhole)
			require.Equal(t, errWhole.Error(), errPieces.Error())
			return
		}
		require.Equal(t, whole, pieces)
		require.Equal(t, int64(len(nar)), n)
		require.NotEmpty(t, whole)
		for _, e := range whole {
			require.LessOrEqual(t, strings.Count(e.Path, "/"), 255)
		}
		js := cdc.ListingJSON(whole)
		back, err := cdc.ParseListingJSON(js)
		require.NoError(t, err, "%s", js)
		require.Equal(t, whole, back)
		require.Equal(t, js, cdc.ListingJSON(back))
	})
}

// FuzzParseListingJSON checks that the `.ls` reader never panics and that
// what it accepts renders back to a document it reads as the same entries.
func FuzzParseListingJSON(f *testing.F) {
	_, entries := ltSample()
	f.Add(cdc.ListingJSON(entries))
	f.Add([]byte(`{"version":1,"root":{"type":"symlink","target":"\u00e9\ud83d\ude00"}}`))
	f.Add([]byte(` {"root":{"entries":{"b":{"type":"symlink","target":"t"},"a":{"size":1,"type":"regular","x":[1,null]}},"type":"directory"},"version":1}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		got, err := cdc.ParseListingJSON(doc)
		if err != nil {
			require.True(t, errors.Is(err, cdc.ErrBadListing), "%v", err)
			return
		}
		js := cdc.ListingJSON(got)
		back, err := cdc.ParseListingJSON(js)
		require.NoError(t, err, "%s", js)
		require.Equal(t, got, back)
	})
}
