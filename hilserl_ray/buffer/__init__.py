"""Replay buffers: preallocated uint8 numpy storage, chunked ingest, RLPD online/offline mixing."""

from hilserl_ray.buffer.chunk import ChunkError, validate_chunk
from hilserl_ray.buffer.mixer import MixedSampler
from hilserl_ray.buffer.persist import BufferFileError
from hilserl_ray.buffer.replay import ReplayBuffer

__all__ = ["BufferFileError", "ChunkError", "MixedSampler", "ReplayBuffer", "validate_chunk"]
