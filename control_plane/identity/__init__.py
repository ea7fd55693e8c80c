"""Customer identity: accounts, sessions, mail, and the pluggable identity providers
(docs/identity.md). Domain services here; the routes are control_plane/api/auth.py."""
