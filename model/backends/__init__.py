"""The Backend interface the app generates through, and its remote (OpenAI-compatible) implementation."""
