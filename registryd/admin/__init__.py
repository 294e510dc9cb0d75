"""Operating a running registry: garbage collection, maintenance timers and
the SSH manhole.  Everything here works on the registry model
(``registryd.storage.registry``), never on HTTP."""
