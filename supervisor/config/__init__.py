"""The configuration: the settings model, its sources, the API key, and one-line problem
messages."""
