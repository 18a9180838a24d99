"""Writers of the real binary formats (xentrace dumps, pcapng ring captures)."""
