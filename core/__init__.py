"""The shared core: what every process of the platform imports, and which imports none of them.

Money (`ledger`, `money`, `groupcommit`, `rawsql`, `idempotency`), events (`events`: outbox,
delivery, signing), data access (`db`, `settings`, `ids`, `secrets`, `crypto`, `apikeys`), the
in-memory configuration snapshot the sidecar and adapter serve from (`snapshot`), stored responses
(`responses`), the embedding cache store, the audit log, the error table (`errors`) and the
contract between Envoy, the sidecar and the adapter (`contract`). tests/foundation/test_layout.py
holds the rule that nothing here imports a process's package.
"""
