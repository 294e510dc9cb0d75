"""Packaging for registryd.

Besides the ``registryd`` package this installs one module into Twisted's
own plugin package, ``twisted/plugins/registryd_plugin.py``, which is what
makes ``twistd registryd`` work.  ``twisted.plugins`` is listed as a package
although this tree has no ``twisted/__init__.py`` nor
``twisted/plugins/__init__.py`` (on purpose: they would shadow Twisted's);
setuptools warns that the ``__init__.py`` is missing and copies the module
anyway, and pip merges it into the installed Twisted's ``twisted/plugins/``.

After installing (or upgrading, or uninstalling), Twisted's plugin cache
``twisted/plugins/dropin.cache`` may be stale.  That is harmless: Twisted
notices the changed plugin modules and rebuilds the cache the next time
plugins are listed (any ``twistd`` run), if it may write there; if not, it
scans the modules each time.  To rebuild it eagerly, as root:
    python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    """__version__ from registryd/__init__.py, without importing the package."""
    with open(os.path.join(HERE, "registryd", "__init__.py"), encoding="utf-8") as stream:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', stream.read(), re.M)
    if match is None:
        raise RuntimeError("registryd/__init__.py has no __version__")
    return match.group(1)


setup(
    name="registryd",
    version=read_version(),
    description="A container image registry daemon on Twisted (Docker Registry HTTP API V2 / OCI Distribution)",
    long_description=__doc__,
    long_description_content_type="text/plain",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["registryd", "registryd.*"]) + ["twisted.plugins"],
    package_data={
        "twisted.plugins": ["registryd_plugin.py"],
        "registryd.ui": ["templates/*.html", "static/*"],
    },
    include_package_data=False,
    install_requires=[
        # conch: the SSH manhole (cryptography, bcrypt); tls: pyOpenSSL,
        # service_identity for TLS listeners (http.tls, ssl:).  The range
        # is the one registryd/compat.py's private names are tested on.
        "Twisted[tls,conch]>=26.4,<27",
        "klein",
        "treq",
        "zope.interface",
        "attrs",
        "PyYAML",
        "hyperlink",
        "prometheus_client",  # /metrics on the debug listener
        "cryptography>=42",  # keys and certificates for TLS and tokens (load_pem_x509_certificates)
        # bearer tokens (auth.token, auth.tokenserver): 2.10.1 stops partial
        # issuer matches (CVE-2024-53861), 2.12 refuses unknown "crit" headers
        # (CVE-2026-32597), 2.13 and 2.14 fix b64/detached and non-canonical
        # signature segments
        "PyJWT>=2.14",
        "bcrypt",  # htpasswd -B entries (auth.htpasswd)
        "botocore>=1.36",  # the s3 storage driver (checksum settings of 1.36)
        "Jinja2",  # the web interface's page templates (registryd.ui)
        "redis>=5",  # the nodes' shared state (the redis section; registryd.shared)
    ],
    extras_require={
        # playwright: drives the system's chromium in the web interface's
        # browser tests (it never downloads a browser there)
        "test": ["pytest", "pytest-twisted", "psutil", "oras", "hypothesis", "playwright"],
    },
    entry_points={
        "console_scripts": [
            "registryd = registryd.cli:main",
            "registryd-gc = registryd.ops.gc_command:main",
            "registryd-referrers = registryd.ops.referrers_command:main",
        ],
    },
    data_files=[
        ("share/registryd/etc", ["etc/registryd.yaml"]),
        ("share/registryd/systemd", ["systemd/registryd.service"]),
    ],
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Software Distribution",
    ],
    zip_safe=False,
)
