"""registryd: a container image registry daemon on Twisted.

It speaks the Docker Registry HTTP API V2 and the OCI Distribution
Specification, and stores data in CNCF Distribution's on-disk layout.
"""

__version__ = "0.1.0"
