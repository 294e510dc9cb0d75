"""TLS for the HTTP listeners: ``http.tls`` and ``ssl:`` endpoint strings.

Both end up the same way: a plain stream endpoint (``tcp:``, ``tcp6:``,
``unix:``) whose connections are wrapped in TLS by
``twisted.protocols.tls.TLSMemoryBIOFactory`` with options built here, so
every TLS listener gets the same guarantees whatever way it was
configured:

* TLS 1.2 or later only (``http.tls.minimumtls: tls1.3`` raises it), with
  Twisted's default cipher selection (forward-secret AEAD suites first);
* the certificate file may hold the whole chain (leaf first), as Go's
  ``LoadX509KeyPair`` reads Distribution's;
* with ``http.tls.clientcas``, client certificates signed by those CAs
  are required (``require-and-verify-client-cert``, the default) or
  verified when given (``verify-client-cert-if-given``).

``http.tls`` applies to every listener that is not an ``ssl:`` endpoint
(so ``--listen tcp:5443`` with ``http.tls`` serves TLS).  An ``ssl:``
endpoint string carries its own ``privateKey``/``certKey``/``extraCertChain``
(falling back to ``http.tls``'s files when it names none), and
``http.tls.clientcas`` applies to it too.  ``sslmethod=`` is refused: the
protocol versions are not negotiable downwards.

Certificates are renewed without a restart: every TLS listener serves
through a :class:`ReloadableTLS`, which makes each new connection's context from
its current options; a reload (SIGHUP, ``registryd.ops.operations``) reads the
files again (:func:`reloaded_options`) and swaps the options in.  Connections
already open keep the certificate they started with.  cert-manager and
certbot renew by rewriting the files in place; a renewal caught half-way
(a new certificate with the old key) fails the check here, and the
listener keeps its old certificate until the next reload.
"""

import warnings

from twisted.internet import endpoints
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from registryd import compat
from registryd.config import CIPHER_SUITES, ConfigError

_SSL_KEYS = {"privateKey", "certKey", "extraCertChain", "dhParameters", "interface", "backlog"}


def _read(path, key):
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {error.strerror or error}") from None


def _certificates(path, key):
    from cryptography import x509
    from OpenSSL import crypto

    try:
        found = x509.load_pem_x509_certificates(_read(path, key))
    except ValueError:
        found = []
    if not found:
        raise ConfigError(key, f"{path} holds no PEM certificate")
    return [crypto.X509.from_cryptography(certificate) for certificate in found]


def _private_key(path, key):
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto

    try:
        loaded = serialization.load_pem_private_key(_read(path, key), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(key, f"{path} is not an unencrypted PEM private key: {error}") from None
    return crypto.PKey.from_cryptography_key(loaded)


def acceptable_ciphers(names, key="http.tls.ciphersuites"):
    """The TLS 1.2 suites of ``names`` (Go's names, as Distribution takes
    them) for CertificateOptions, or None to keep the default when only
    TLS 1.3 suites are named: those are always offered (Go does not let
    them be chosen either).

    :raises ConfigError: none of the TLS 1.2 suites named is available in
        this OpenSSL (RC4, for one, is gone).
    """
    from OpenSSL import SSL
    from twisted.internet import ssl

    wanted = ":".join(CIPHER_SUITES[name] for name in names if CIPHER_SUITES[name] is not None)
    if not wanted:
        return None
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(wanted.encode("ascii"))
    except SSL.Error:
        raise ConfigError(key, f"none of {', '.join(names)} is available in this OpenSSL") from None
    return ssl.AcceptableCiphers.fromOpenSSLCipherString(wanted)


def server_options(
    certificate,
    key,
    tls=None,
    extra_chain=None,
    dh_parameters=None,
    keys=("http.tls.certificate", "http.tls.key"),
):
    """CertificateOptions for a server with ``certificate``/``key`` files,
    and client-certificate and version settings from ``tls`` (a
    :class:`registryd.config.TLSConfig`, or None).

    :raises ConfigError: unreadable or unusable files, naming ``keys``.
    """
    from OpenSSL import SSL
    from twisted.internet import ssl

    chain = _certificates(certificate, keys[0])
    private_key = _private_key(key, keys[1])
    if extra_chain is not None:
        chain += _certificates(extra_chain, "extraCertChain")
    options = dict(
        privateKey=private_key,
        certificate=chain[0],
        extraCertChain=chain[1:] or None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    if tls is not None and tls.minimumtls == "tls1.3":
        options["raiseMinimumTo"] = ssl.TLSVersion.TLSv1_3
    if tls is not None and tls.ciphersuites:
        options["acceptableCiphers"] = acceptable_ciphers(tls.ciphersuites)
    if dh_parameters is not None:
        from twisted.python.filepath import FilePath

        options["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(FilePath(dh_parameters))
    client_cas = []
    if tls is not None and tls.clientcas:
        for index, path in enumerate(tls.clientcas):
            client_cas += _certificates(path, f"http.tls.clientcas[{index}]")
        options.update(
            verify=True,
            caCerts=client_cas,
            requireCertificate=tls.clientauth == "require-and-verify-client-cert",
        )
    # Twisted hands pyOpenSSL its own certificate objects, which newer
    # pyOpenSSL releases deprecate (older ones accept nothing else).  The
    # context is made once, here, so the warning would only be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            result = ssl.CertificateOptions(**options)
            context = result.getContext()  # checks that key and certificate match
        except (SSL.Error, ValueError) as error:
            raise ConfigError(keys[1], f"cannot be used with {certificate}: {error}") from None
        for ca in client_cas:
            # Tell clients which CAs are accepted, so they pick the right
            # certificate (Go's client sends none if none fits the list).
            context.add_client_ca(ca)
    return result


def http_tls_options(tls):
    """Options for ``http.tls`` (a TLSConfig), or None when it is not set."""
    if tls is None:
        return None
    return server_options(tls.certificate, tls.key, tls)


def listener(description, tls, tls_options=None):
    """``(plain endpoint description, CertificateOptions or None)`` for
    one listen endpoint string.

    :param tls: the http.tls TLSConfig or None.
    :param tls_options: :func:`http_tls_options` of it, if already made.
    :raises ConfigError: an ``ssl:`` endpoint that cannot be served.
    """
    kind = description.split(":", 1)[0].lower()
    if kind != "ssl":
        if tls is None:
            return description, None
        return description, tls_options if tls_options is not None else http_tls_options(tls)
    args, kwargs = compat.parse_endpoint_description(description)
    unknown = sorted(set(kwargs) - _SSL_KEYS)
    if unknown:
        problem = (
            "sslmethod is not supported: registryd speaks TLS 1.2 or later"
            if "sslmethod" in unknown
            else f"unsupported parameter {unknown[0]}"
        )
        raise ConfigError(description, problem)
    if len(args) != 2:
        raise ConfigError(description, "expected ssl:PORT[:privateKey=FILE][:certKey=FILE]...")
    port = args[1]
    if "privateKey" in kwargs:
        key = kwargs["privateKey"]
        certificate = kwargs.get("certKey", key)
    elif tls is not None:
        key, certificate = tls.key, tls.certificate
    else:
        key = certificate = "server.pem"  # Twisted's default
    options = server_options(
        certificate,
        key,
        tls,
        kwargs.get("extraCertChain"),
        kwargs.get("dhParameters"),
        keys=(f"{description} certKey", f"{description} privateKey"),
    )
    plain = "tcp:" + endpoints.quoteStringArgument(port)
    for name in ("interface", "backlog"):
        if name in kwargs:
            plain += f":{name}=" + endpoints.quoteStringArgument(kwargs[name])
    return plain, options


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableTLS:
    """Server TLS whose options (certificate, key, CAs) can be replaced
    while the listener runs: each connection takes the current ones."""

    def __init__(self, options):
        #: the CertificateOptions new connections use
        self.options = options

    def serverConnectionForTLS(self, tls_protocol):
        from OpenSSL import SSL

        return SSL.Connection(self.options.getContext(), None)


def reloaded_options(description, tls):
    """Fresh CertificateOptions for the listen endpoint ``description``
    under ``http.tls`` settings ``tls``: its files read again, or None for a
    plain listener.

    :raises ConfigError: the files are unreadable or do not fit together.
    """
    return listener(description, tls)[1]


def wrap(factory, server_tls):
    """``factory`` behind TLS made by ``server_tls`` (a :class:`ReloadableTLS`,
    CertificateOptions...), or as is when None."""
    if server_tls is None:
        return factory
    from twisted.protocols.tls import TLSMemoryBIOFactory

    return TLSMemoryBIOFactory(server_tls, False, factory)
