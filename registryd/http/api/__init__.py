"""HTTP handlers, one module per resource.  They know the API, call the
registry model, and raise ``registryd.errors`` exceptions; ``registryd.http.app``
routes to them and renders errors."""
