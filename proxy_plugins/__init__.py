"""The two processes beside Envoy: `sidecar` (ext_authz: every check before the upstream) and
`adapter` (inference: translation, streaming, metering, settlement). They share only `core`."""
