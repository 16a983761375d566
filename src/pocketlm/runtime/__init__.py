"""The runtime stage: one generation engine on torch and llama.cpp, the GGUF writer and reader, the
size x context x latency bench and hardware measurements."""
