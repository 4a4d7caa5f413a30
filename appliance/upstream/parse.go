package upstream

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// ParseURL parses "URL[?priority=N]" into a Config with URL and Priority set.
// The priority parameter is removed from the query; other parameters stay and
// are sent with every relative request. Priority defaults to DefaultPriority.
func ParseURL(raw string) (Config, error) {
	pu, err := parseBase(raw)
	if err != nil {
		return Config{}, err
	}
	prio, seen := DefaultPriority, false
	var keep []string
	for _, kv := range strings.Split(pu.RawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case kv == "":
		case k != "priority":
			keep = append(keep, kv)
		case seen:
			return Config{}, fmt.Errorf("upstream %s: priority given twice", redact(pu))
		default:
			seen = true
			prio, err = strconv.Atoi(v)
			if err != nil || prio < 0 {
				return Config{}, fmt.Errorf("upstream %s: bad priority %q", redact(pu), v)
			}
		}
	}
	pu.RawQuery, pu.ForceQuery = strings.Join(keep, "&"), false
	return Config{URL: pu.String(), Priority: prio}, nil
}

// parseBase parses and checks an upstream base URL; errors never show credentials.
func parseBase(raw string) (*url.URL, error) {
	pu, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.URL may hold a password
		}
		return nil, fmt.Errorf("parse upstream URL: %w", err)
	}
	switch {
	case pu.Scheme == "http" || pu.Scheme == "https":
		if pu.Host == "" {
			return nil, fmt.Errorf("upstream %s: no host", redact(pu))
		}
	case pu.Scheme == "file":
		if pu.Host != "" || pu.User != nil || !strings.HasPrefix(pu.Path, "/") {
			return nil, fmt.Errorf("upstream %s: want file:///absolute/path", redact(pu))
		}
	default:
		return nil, fmt.Errorf("upstream %s: scheme %q is not http, https or file", redact(pu), pu.Scheme)
	}
	if pu.Fragment != "" {
		return nil, fmt.Errorf("upstream %s: unexpected fragment", redact(pu))
	}
	return pu, nil
}

// redact returns u without userinfo, query or fragment.
func redact(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}
