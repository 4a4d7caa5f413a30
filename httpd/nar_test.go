package httpd

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// TestBodyCutsAStalledClient: a streamed body whose client stops reading
// fails its write once stall passes with no byte moved, and a client that
// keeps reading, however slowly, is served to the end.
func TestBodyCutsAStalledClient(t *testing.T) {
	for _, tc := range []struct {
		name    string
		readGap time.Duration // between the client's 4 KiB reads; 0: never reads
		wantErr bool
	}{
		{"stalled", 0, true},
		{"slow", 10 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := net.Pipe() // unbuffered: a write waits for a read
			defer server.Close()
			defer client.Close()
			if tc.readGap > 0 {
				go func() {
					buf := make([]byte, 4<<10)
					for {
						time.Sleep(tc.readGap)
						if _, err := client.Read(buf); err != nil {
							return
						}
					}
				}()
			}
			const size = 512 << 10 // a 64 KiB piece moves in 160 ms, the whole in 1.3 s
			b := &body{r: strings.NewReader(strings.Repeat("x", size)), cancel: func() {}, conn: server, stall: time.Second}
			require.NoError(t, server.SetWriteDeadline(time.Now().Add(b.stall))) // as fasthttp does
			start := time.Now()
			n, err := b.WriteTo(server)
			if tc.wantErr {
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				require.Less(t, time.Since(start), 5*time.Second)
				return
			}
			require.NoError(t, err)
			require.EqualValues(t, size, n)
			require.Greater(t, time.Since(start), b.stall, "the slow client outlasted one stall period")
		})
	}
}

// TestChunkedBodyGoesOutInPieces: a body of unknown length (a NAR still
// arriving) goes out in chunks of writePiece bytes, not fasthttp's 4 KiB
// chunks with a flush, and so a write system call, after each.
func TestChunkedBodyGoesOutInPieces(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		b := &body{r: struct{ io.Reader }{bytes.NewReader(data)}, cancel: func() {}, conn: ctx.Conn(), stall: time.Minute,
			line: logLine{access: newAccessLog(io.Discard, nil)}}
		ctx.SetBodyStream(b, -1)
	}}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Shutdown()
	conn, err := ln.Dial()
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: cairn\r\n\r\n"))
	require.NoError(t, err)

	tp := textproto.NewReader(bufio.NewReaderSize(conn, 1<<20))
	status, err := tp.ReadLine()
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200 OK", status)
	h, err := tp.ReadMIMEHeader()
	require.NoError(t, err)
	require.Equal(t, "chunked", h.Get("Transfer-Encoding"))
	var sizes []int
	var got []byte
	for {
		line, err := tp.ReadLine()
		require.NoError(t, err)
		n, err := strconv.ParseInt(line, 16, 32)
		require.NoError(t, err, "chunk size line %q", line)
		if n == 0 {
			break
		}
		chunk := make([]byte, n+2)
		_, err = io.ReadFull(tp.R, chunk)
		require.NoError(t, err)
		got = append(got, chunk[:n]...)
		sizes = append(sizes, int(n))
	}
	require.Equal(t, data, got)
	require.Len(t, sizes, len(data)/writePiece, "chunk sizes %v", sizes)
	for _, n := range sizes {
		require.Equal(t, writePiece, n)
	}
}
