package seed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/appliance/narinfo"
)

const storeDir = "/nix/store/"

// parseRoot reads a store path, a basename or a bare store hash, and
// returns its hash and its basename ("" for a bare hash).
func parseRoot(s string) (hash, base string, err error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, storeDir), "/")
	if narinfo.ValidHash(s) {
		return s, "", nil
	}
	if err := narinfo.ValidStorePath(storeDir + s); err != nil {
		return "", "", fmt.Errorf("%q is not a store path: %w", s, err)
	}
	return s[:32], s, nil
}

// basename is a narinfo's store path without the store directory.
func basename(info *narinfo.Info) string { return strings.TrimPrefix(info.StorePath, storeDir) }

// closureSet is the narinfos reachable from some roots, and the
// references that could not be found.
type closureSet struct {
	infos   map[string]*narinfo.Info // by store hash
	missing map[string]string        // store hash -> basename, of paths the source lacks
}

// collect fetches the narinfos of roots and of everything they reference
// from src. Every narinfo must carry a valid signature by key, so that the
// drive verifies.
func collect(ctx context.Context, src Source, roots map[string]string, key signature.PublicKey) (*closureSet, error) {
	cs := &closureSet{infos: map[string]*narinfo.Info{}, missing: map[string]string{}}
	queue := make([]string, 0, len(roots))
	for h := range roots {
		queue = append(queue, h)
	}
	slices.Sort(queue)
	names := map[string]string{}
	for h, b := range roots {
		names[h] = b
	}
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if cs.infos[h] != nil || cs.missing[h] != "" {
			continue
		}
		info, err := src.NarInfo(ctx, h)
		if errors.Is(err, ErrNotFound) {
			cs.missing[h] = cmpOr(names[h], h)
			continue
		}
		if err != nil {
			return nil, err
		}
		if info.Hash() != h {
			return nil, fmt.Errorf("narinfo %s: names %s", h, info.StorePath)
		}
		if want := names[h]; want != "" && want != basename(info) {
			cs.missing[h] = want // the source holds another path under that hash
			continue
		}
		if _, ok := info.Verify([]signature.PublicKey{key}); !ok {
			return nil, fmt.Errorf("narinfo of %s carries no valid signature by %s", info.StorePath, key.Name)
		}
		cs.infos[h] = info
		for _, r := range info.References {
			if rh := r[:32]; cs.infos[rh] == nil {
				names[rh] = r
				queue = append(queue, rh)
			}
		}
	}
	return cs, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// lacking returns the basenames of the paths in h's closure that are
// missing, sorted; memo caches the answer per hash.
func (cs *closureSet) lacking(h string, memo map[string][]string) []string {
	if got, ok := memo[h]; ok {
		return got
	}
	if b, ok := cs.missing[h]; ok {
		memo[h] = []string{b}
		return memo[h]
	}
	memo[h] = nil // a cycle through h adds nothing
	set := map[string]bool{}
	for _, r := range cs.infos[h].References {
		if r[:32] == h {
			continue
		}
		for _, m := range cs.lacking(r[:32], memo) {
			set[m] = true
		}
	}
	var out []string
	for m := range set {
		out = append(out, m)
	}
	slices.Sort(out)
	memo[h] = out
	return out
}

// topo orders infos so that every path comes after the paths it
// references, ties broken by store path.
func topo(infos map[string]*narinfo.Info) []*narinfo.Info {
	hashes := make([]string, 0, len(infos))
	for h := range infos {
		hashes = append(hashes, h)
	}
	slices.SortFunc(hashes, func(a, b string) int { return strings.Compare(infos[a].StorePath, infos[b].StorePath) })
	out := make([]*narinfo.Info, 0, len(infos))
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(h string)
	visit = func(h string) {
		if state[h] != 0 {
			return
		}
		state[h] = 1
		refs := slices.Clone(infos[h].References)
		slices.Sort(refs)
		for _, r := range refs {
			if infos[r[:32]] != nil {
				visit(r[:32])
			}
		}
		state[h] = 2
		out = append(out, infos[h])
	}
	for _, h := range hashes {
		visit(h)
	}
	return out
}
