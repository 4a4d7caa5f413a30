package fusefs

import (
	"github.com/cespare/xxhash/v2"
)

// Inode numbers. The root and the three top directories have fixed ones;
// every other node's is a hash of what it shows: its kind, the store path
// or NAR, and its path inside the NAR. The same file therefore has the
// same number in every mount, local or remote, and across remounts. Hashes
// below firstHashedIno are moved up, and the top bit is clear, which keeps
// them apart from go-fuse's automatic numbers.
const (
	rootIno        = 1
	narDirIno      = 2
	storeDirIno    = 3
	narinfoDirIno  = 4
	firstHashedIno = 16
)

// hashIno derives a stable inode number from a kind and key parts.
func hashIno(kind string, parts ...string) uint64 {
	d := xxhash.New()
	d.WriteString(kind)
	for _, p := range parts {
		d.WriteString("\x00")
		d.WriteString(p)
	}
	ino := d.Sum64() &^ (1 << 63)
	if ino < firstHashedIno {
		ino += firstHashedIno
	}
	return ino
}

// entryIno is the inode number of the entry at path inside a store path.
func entryIno(storeHash, path string) uint64 { return hashIno("store", storeHash, path) }

// narIno is the inode number of nar/<narhash>.nar.
func narIno(narHash [32]byte) uint64 { return hashIno("nar", string(narHash[:])) }

// narinfoIno is the inode number of narinfo/<hash>.narinfo.
func narinfoIno(storeHash string) uint64 { return hashIno("narinfo", storeHash) }
