"""I/O-free state machines of the blkif backend and frontend, with logic variants."""
