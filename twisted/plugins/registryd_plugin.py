"""twistd plugin: makes ``twistd registryd`` run the registry.

Twisted imports every module in ``twisted/plugins`` to list plugins (even
for ``twistd --help`` and with ``-r`` before the reactor is chosen), so this
file imports only ServiceMaker; ``registryd.runtime.tap`` is loaded when used.
Deliberately there is no ``__init__.py`` in ``twisted/`` or here: this
directory extends Twisted's own ``twisted.plugins`` package.
"""

from twisted.application.service import ServiceMaker

registryd = ServiceMaker(
    "registryd",
    "registryd.runtime.tap",
    "A container image registry (Docker Registry HTTP API V2 / OCI Distribution).",
    "registryd",
)
