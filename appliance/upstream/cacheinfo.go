package upstream

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// CacheInfo is what an upstream's nix-cache-info declares.
type CacheInfo struct {
	StoreDir      string
	WantMassQuery bool
	Priority      int
}

// CacheInfo fetches and parses the upstream's nix-cache-info; absent fields stay zero.
func (u *Upstream) CacheInfo(ctx context.Context) (CacheInfo, error) {
	data, err := u.fetchSmall(ctx, "nix-cache-info", MaxCacheInfoSize)
	if err != nil {
		return CacheInfo{}, fmt.Errorf("fetch %s/nix-cache-info: %w", u, err)
	}
	var ci CacheInfo
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch {
		case !ok:
		case k == "StoreDir":
			ci.StoreDir = v
		case k == "WantMassQuery":
			ci.WantMassQuery = v == "1"
		case k == "Priority":
			if ci.Priority, err = strconv.Atoi(v); err != nil {
				return CacheInfo{}, fmt.Errorf("parse %s/nix-cache-info: %w: bad Priority %q", u, ErrUnavailable, v)
			}
		}
	}
	return ci, nil
}
