package narinfo

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// LoadOrCreateKey loads the Nix secret key file at path, creating one named name if it does not exist.
func LoadOrCreateKey(path, name string) (sk signature.SecretKey, created bool, err error) {
	sk, err = loadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return sk, false, err
	}
	sk, err = createKey(path, name)
	return sk, err == nil, err
}

// loadKey reads a secret key file, refusing one others may read.
func loadKey(path string) (signature.SecretKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("load key %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("load key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return signature.SecretKey{}, fmt.Errorf("load key %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return signature.SecretKey{}, fmt.Errorf("load key %s: mode %04o lets others read the secret key; run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("load key %s: %w", path, err)
	}
	sk, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("load key %s: %v: %w", path, err, ErrBad)
	}
	return sk, nil
}

// createKey generates a key named name and writes it to path atomically with mode 0600.
func createKey(path, name string) (signature.SecretKey, error) {
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r == ':' || r <= ' ' }) {
		return signature.SecretKey{}, fmt.Errorf("create key %s: bad key name %s: %w", path, quote(name), ErrBad)
	}
	sk, _, err := signature.GenerateKeypair(name, nil)
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("create key %s: %w", path, err)
	}
	if err := writeFileAtomic(path, []byte(sk.String())); err != nil {
		return signature.SecretKey{}, fmt.Errorf("create key %s: %w", path, err)
	}
	return sk, nil
}

// writeFileAtomic writes b to path via a 0600 temp file and rename, creating the parent 0700.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
