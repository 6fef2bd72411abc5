"""The HTTP server: Ollama's API, the scheduler and the lives of the worker processes."""
