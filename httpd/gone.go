package httpd

import (
	"context"
	"net"
	"syscall"
	"time"
)

// statusClientGone is logged for a request whose client hung up before
// there was anything to answer, as nginx logs it.
const statusClientGone = 499

// goneEvery is how often a request with nothing to write yet checks
// whether its client is still there.
const goneEvery = time.Second

// watchGone calls cancel once the client at conn hangs up, looking every
// every without reading anything. A write would notice too, but a Range on
// a NAR still arriving has nothing to write until the NAR is committed.
// It returns a function that stops the watch; conn must stay open until
// that returns.
func watchGone(conn net.Conn, cancel context.CancelFunc, every time.Duration) (stop func()) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if peerGone(raw) {
				cancel()
				return
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}
