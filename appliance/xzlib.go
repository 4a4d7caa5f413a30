package appliance

import "os/exec"

// XZLibrary, as Config.XZ, decodes xz with liblzma in the cairn process,
// where the build has cgo on Linux; elsewhere it means pure Go.
const XZLibrary = "liblzma"

// defaultXZ is the fastest xz decoder at hand: liblzma in-process, else the
// xz binary on PATH, else "" for pure Go.
func defaultXZ() string {
	if xzLibBuiltIn {
		return XZLibrary
	}
	path, _ := exec.LookPath("xz")
	return path
}
