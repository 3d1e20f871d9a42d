"""tabagent's Python ML worker: MediaPipe vision, faster-whisper speech and Hugging Face
Transformers behind gRPC, for what only Python has. tabagent starts and supervises it; it keeps
no state of its own (models are loaded into memory from files tabagent serves)."""
