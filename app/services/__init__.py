"""I/O adapters behind small protocols, each with an embedded default."""
