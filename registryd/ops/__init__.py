"""Operating a registry: health checks, metrics, the debug listener, garbage collection, maintenance timers, the manhole and the offline tools."""
