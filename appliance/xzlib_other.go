//go:build !(cgo && linux)

package appliance

import (
	"errors"
	"io"
)

// xzLibBuiltIn says whether this build decodes xz with liblzma in-process.
const xzLibBuiltIn = false

func newXZLib(io.Reader, func()) (io.ReadCloser, error) {
	return nil, errors.New("xz: liblzma is not built in")
}
