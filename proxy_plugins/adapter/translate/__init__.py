"""Pure protocol translation for /v1/responses (no I/O): Chat Completions and Anthropic Messages."""
