"""The data stage: the built-in offline corpus, tokenizer training and local/streamed sources turned
into packed, memory-mapped token shards with a manifest."""
