"""The sidecar: Envoy's ext_authz service (`python -m proxy_plugins.sidecar.server`)."""
