//go:build !cgo

package cdc

// newPacker is never called: without cgo, klauspost makes every frame.
func newPacker(Level) packer { return nil }

// packerName is empty: without cgo, klauspost makes every frame.
func packerName(Level) string { return "" }
