"""Client-side helpers for customers of the platform: request signing, webhook verification."""
