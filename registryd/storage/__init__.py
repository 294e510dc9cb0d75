"""Storage: pluggable drivers (paths and bytes) and the registry model on top."""
