package appliance

// SetRecompressSegment sets how many bytes of new frames a recompression
// writes before it records them, for a test.
func (s *Store) SetRecompressSegment(n int) { s.recompressSegment = n }
