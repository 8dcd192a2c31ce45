"""`dlforge serve`: the HTTP server (OpenAI-compatible API, health, Prometheus metrics) over loaded models."""
