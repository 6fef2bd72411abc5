"""One model per process: renders prompts, tokenizes, generates, streams replies."""
