"""registryd's web interface: browse and manage the registry in a browser.

Served by the registry process itself under ``/ui/`` (``/`` leads there
for a browser), rendered on the server from the registry model with a
little JavaScript of its own, and nothing fetched from anywhere else.

Modules: ``app`` (the routes, CSRF and security headers, error pages),
``browse`` (what pages show, from the model), ``access`` (sign-in and
grants, through the registry's own authorization), ``session`` (the
signed session cookie), ``pages`` (templates and static files).
"""
