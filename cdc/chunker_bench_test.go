package cdc_test

import (
	"math/rand/v2"
	"testing"

	"cairn/cdc"
)

func BenchmarkChunker(b *testing.B) {
	data := make([]byte, 64<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c, _ := cdc.NewChunker(cdc.DefaultParams, func([]byte) error { return nil })
		_, _ = c.Write(data)
		_ = c.Close()
	}
}
