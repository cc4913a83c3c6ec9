"""Adapters at the edge: persistence, codecs, settings, the application service and the CLI."""
