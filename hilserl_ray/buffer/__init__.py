"""Replay buffers: preallocated uint8 numpy storage, chunked ingest, RLPD online/offline mixing."""
