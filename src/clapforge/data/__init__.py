"""Audio-caption data: streamed readers, shard writing, captions from labels, the built-in synthetic corpus."""
