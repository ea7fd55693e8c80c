"""Stored responses (`store`) and the background-response queue (`jobs`), shared by the adapter
(which writes and runs them) and the control plane (which serves them)."""
