package appliance

import "cairn/kv"

// FailCommits makes every manifest commit of s fail with err, as an I/O
// error in bbolt's commit would, without committing.
func FailCommits(s *Store, err error) {
	s.commitNAR = func(*kv.Manifest, *kv.NarInfo, *kv.Upload) (bool, error) { return false, err }
}
