package httpd

import (
	"bytes"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAccessLogLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		line logLine
		err  error
		want string
	}{
		{"plain", logLine{method: "GET", path: "/x.narinfo", status: 200, remote: "127.0.0.1"}, nil,
			`level=INFO msg=request method=GET path=/x.narinfo status=200 bytes=42 duration=\S+ remote=127.0.0.1\n$`},
		{"quoted", logLine{method: "GET", path: `/a"b c`, status: 400, remote: "::1"}, errors.New("cut short"),
			`level=WARN msg=request method=GET path="/a\\"b c" status=400 bytes=42 duration=\S+ remote=::1 err="cut short"\n$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			a := newAccessLog(&buf, nil)
			tc.line.start = time.Now()
			a.write(tc.line, 42, tc.err)
			require.Regexp(t, regexp.MustCompile(`^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z `+tc.want), buf.String())
		})
	}
}
