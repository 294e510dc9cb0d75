"""The SSH manhole: a Python prompt inside the running daemon, for admins.

``ssh -p 5022 admin@127.0.0.1`` opens an interactive interpreter (Twisted's
``twisted.conch.manhole``) whose namespace holds the live registry and a
few helpers (see :data:`HELP`); ``ssh -p 5022 admin@127.0.0.1 'gc()'``
runs one expression or statement without a terminal and prints its result,
waiting for it if it is a Deferred, so the same helpers serve scripts.

Only public keys listed in ``manhole.authorized_keys`` may log in, as
``manhole.user``; there is no password authentication at all (the portal
has only a public key checker, so the server offers nothing else).  The
host key is read from ``manhole.host_key``, or generated there (Ed25519,
mode 0600) on first start.  Listen on loopback (the default) or another
private address: whoever gets in can do anything the daemon can.

Every statement typed (at the prompt or as the command) runs in a thread of
its own under a watchdog, never on the reactor thread, and helpers wait
there for what they start on the reactor, so they return plain values:
``sorted(repos())``, ``len(tags(r))``, ``stats()["read_only"]`` work, and
no statement can hold up HTTP clients or grow the daemon without bound
(see :mod:`registryd.ops.statements` for how, and for what CPython
cannot interrupt).  Errors come back as one line; ^C stops a statement.
"""

import codeop
import inspect
import os
import pprint

from twisted.application.service import MultiService
from twisted.conch import interfaces as iconch
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.cred import portal
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from registryd import compat
from registryd.config import ConfigError
from registryd.http.listeners import ListenerService
from registryd.ops.statements import StatementRunner, call_on_reactor, describe

log = Logger()

HELP = """\
registryd manhole.  Each statement runs beside the registry, which keeps serving;
it is stopped after manhole.timelimit of computing, or if the daemon grows by
manhole.memorylimit; ^C stops it too.  Helpers return plain values:
  registry                 the live registry model (registryd.storage.registry.Registry)
  config                   the configuration it was started with
  repos()                  repository names (a list)
  tags(repo)               tags of one repository (a list)
  uploads()                uploads in storage (a list of dicts: repository, id, age, size, active)
  gc(dry_run=True, delete_untagged=False, grace_period=None)
                           garbage collection; dry run unless dry_run=False
  purge_uploads(older_than="168h", dry_run=False)
                           remove uploads started longer ago than older_than
  rebuild_referrers(repo=None, dry_run=False)
                           rebuild the referrers index from the manifests
  delete_repository(repo, force=False)
                           remove a repository's tags, manifests, blob links,
                           referrers index and idle uploads (blobs: gc); a dict;
                           force=True: also when it has immutable tags
  retention(dry_run=True, json=False)
                           lifecycle.retention now: which tags and manifests go, and why
  usage(repo=None)         quota usage (lifecycle.quotas), and the bytes repo holds
  readonly(on=None)        read-only mode: set it with True/False, show it with ()
  stats()                  a dict: repositories, blobs, bytes, uploads, last gc and purge
  maintenance              the timers' state: last_gc, last_purge, gc_running
  on_reactor(f, *args)     call f on the reactor thread and wait for its value
                           (for registry/maintenance methods that do I/O)
  help_registryd()         this text
"""


# --- keys ----------------------------------------------------------------------


def parse_key(data):
    """conch's ``Key.fromString``, failing only with ``BadKeyError`` (or
    ``EncryptedKeyError``): its parsers meet a corrupt or truncated key,
    or a file of another kind, with whatever their unpacking raises
    (``ValueError``, ``struct.error``, ``IndexError``, ``AssertionError``
    for a line starting with ``{``), which would be a traceback at start-up.
    """
    try:
        return keys.Key.fromString(data)
    except (keys.BadKeyError, keys.EncryptedKeyError):
        raise
    except Exception as error:  # any garbage, any exception: see above
        raise keys.BadKeyError(" ".join(str(error).split()) or type(error).__name__) from None


def load_authorized_keys(path, key_path="manhole.authorized_keys"):
    """The public keys in the OpenSSH authorized_keys file at ``path``.

    :raises ConfigError: the file cannot be read or holds no usable key.
    """
    try:
        with open(path, "rb") as stream:
            found = list(readAuthorizedKeyFile(stream, parse_key))
    except OSError as error:
        raise ConfigError(key_path, f"cannot read {path}: {error.strerror or error}") from None
    if not found:
        raise ConfigError(key_path, f"{path} holds no public key in OpenSSH format")
    return found


def load_or_create_host_key(path, key_path="manhole.host_key"):
    """The host key at ``path``, generated (Ed25519, mode 0600) if absent."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if not os.path.exists(path):
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        data = key.toString("OPENSSH")
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made one meanwhile: use it
        except OSError as error:
            raise ConfigError(
                key_path, f"cannot create {path}: {error.strerror or error}"
            ) from None
        else:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            log.info(
                "generated manhole host key {path} ({fingerprint})",
                path=path,
                fingerprint=key.fingerprint(keys.FingerprintFormats.SHA256_BASE64),
            )
            return key
    try:
        with open(path, "rb") as stream:
            key = parse_key(stream.read())
    except keys.EncryptedKeyError:
        raise ConfigError(
            key_path, f"{path} is encrypted; the host key must have no passphrase"
        ) from None
    except (OSError, keys.BadKeyError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ConfigError(key_path, f"cannot load host key {path}: {message}") from None
    if key.isPublic():
        raise ConfigError(key_path, f"{path} is a public key; the host key must be private")
    return key


def check_config(manhole_config):
    """Fail start-up early (tap's option check) on a bad key file."""
    load_authorized_keys(manhole_config.authorized_keys)
    load_or_create_host_key(manhole_config.host_key)


# --- the namespace -------------------------------------------------------------


def _on_reactor(reactor, function):
    """``function`` as a helper: started on the reactor, its value waited
    for in the statement's thread."""

    def call(*args, **kwargs):
        return call_on_reactor(reactor, function, *args, **kwargs)

    call.__name__ = function.__name__
    call.__doc__ = function.__doc__
    return call


def _seconds(value, what):
    """A duration given as seconds or as a Go duration string ("168h"):
    registryd's one duration rule, with numbers in seconds."""
    from registryd.config.types import Duration

    return Duration(numbers="seconds").check(value, what)


def _switch(value, name):
    """A helper's on/off argument: True or False (1 or 0, as Python
    spells them too).  Anything else is refused before the helper does
    anything, rather than read by its truth: ``readonly("false")`` or
    ``delete_repository(repo, force="no")`` would do what was not typed."""
    if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {repr(value)[:100]}")


def _name(repo, name="repo"):
    """A helper's repository name argument: a string (the registry checks
    it against the spec's grammar, one line when it is not one)."""
    if not isinstance(repo, str):
        raise TypeError(f"{name} must be a repository name (a string), got {repr(repo)[:100]}")
    return repo


def make_namespace(registry, maintenance, config, reactor=None, retention=None, events=None):
    """The helpers a manhole session starts with (a fresh dict each time).
    ``retention``: the daemon's ``registryd.lifecycle.retention_runner.Retention``
    (by default one for ``config``'s rules, without this process's pulls).
    ``events``: the daemon's notifier (``registryd.notifications.events``),
    told of repositories removed; none by default.

    They are called in statement threads (:class:`StatementRunner`); each does its
    work on the reactor thread and returns a plain value."""
    if reactor is None:
        from twisted.internet import reactor
    from registryd import errors
    from registryd.ops.maintenance import list_uploads

    async def repos():
        """Repository names (those with manifests), sorted."""
        return await registry.repositories()

    async def tags(repo):
        """Tags of repository ``repo``, sorted."""
        return await registry.repository(_name(repo)).tags.all()

    async def uploads():
        """Uploads in storage, oldest first."""
        found = await list_uploads(registry)
        return [upload.to_dict() for upload in sorted(found, key=lambda u: u.started_at)]

    async def gc(dry_run=True, delete_untagged=False, grace_period=None):
        """Garbage collection now (a dry run unless dry_run=False)."""
        dry_run = _switch(dry_run, "dry_run")
        delete_untagged = _switch(delete_untagged, "delete_untagged")
        if grace_period is not None:
            grace_period = _seconds(grace_period, "grace_period")
        return await maintenance.gc(
            dry_run=dry_run, delete_untagged=delete_untagged, grace_period=grace_period
        )

    async def purge_uploads(older_than="168h", dry_run=False):
        """Remove uploads started more than older_than ago."""
        return await maintenance.purge_uploads(
            _seconds(older_than, "older_than"), _switch(dry_run, "dry_run")
        )

    async def rebuild_referrers(repo=None, dry_run=False):
        """Rebuild the referrers index (of one repository, or all)."""
        from registryd.ops.referrers import rebuild_referrers as rebuild

        return await rebuild(
            registry,
            repositories=None if repo is None else [_name(repo)],
            dry_run=_switch(dry_run, "dry_run"),
        )

    async def delete_repository(repo, force=False):
        """Remove repository ``repo`` as ``DELETE /v2/<repo>/_registryd/repository``
        does (whatever storage.delete says: the manhole is the operator's;
        immutable tags too with force=True); what was removed, and what
        pushes meanwhile kept."""
        repository = registry.repository(_name(repo))
        if not _switch(force, "force"):
            await repository.check_removable()
        report = await repository.remove()
        if events is not None:
            events.repository_deleted(None, repository.name)
        return report.to_dict()

    if retention is None:
        from registryd.lifecycle.pulls import NO_PULLS
        from registryd.lifecycle.retention_runner import Retention

        retention = Retention(registry, config.lifecycle.retention, NO_PULLS)

    async def run_retention(dry_run=True, json=False):
        """lifecycle.retention now (a dry run unless dry_run=False): the
        report, as lines of text or (json=True) a dict."""
        dry_run, json = _switch(dry_run, "dry_run"), _switch(json, "json")
        report = await retention.run(dry_run=dry_run)
        return report.to_dict() if json else "\n".join(report.lines())

    async def usage(repo=None):
        """Quota usage (of the quotas applying to ``repo``, if given), and
        the bytes ``repo`` holds."""
        if repo is not None:  # checked as every repository name (usage walks its tree)
            repo = registry.repository(_name(repo)).name
        found = {"quotas": [quota.to_dict() for quota in await registry.quotas.report(repo)]}
        if repo is not None:
            found["bytes"] = sum((await registry.quotas.repository_usage(repo)).values())
        return found

    def readonly(on=None):
        """Read-only mode: readonly(True), readonly(False); readonly() shows it."""
        if on is not None:
            maintenance.set_read_only(_switch(on, "on"))
        return registry.read_only

    async def stats():
        """Counts and sizes from storage, and what maintenance did last."""
        blobs = await registry.blobs.enumerate()
        size = 0
        for digest in blobs:
            try:
                size += (await registry.blobs.stat(digest)).size
            except errors.BlobUnknown:
                pass
        found_uploads = await list_uploads(registry)
        return {
            "repositories": len(await registry.repositories()),
            "blobs": len(blobs),
            "blob_bytes": size,
            "uploads": len(found_uploads),
            "uploads_active": sum(1 for upload in found_uploads if upload.active),
            "read_only": registry.read_only,
            "delete_enabled": registry.delete_enabled,
            "gc_running": maintenance.gc_running,
            "last_gc": maintenance.last_gc.summary() if maintenance.last_gc else None,
            "last_upload_purge": (
                maintenance.last_purge.summary() if maintenance.last_purge else None
            ),
        }

    def help_registryd():
        print(HELP, end="")

    class _Leave:
        """exit and quit: the builtins would raise SystemExit inside the
        daemon; here they only say how to leave."""

        def __repr__(self):
            return "Use Ctrl-D (^D) to leave the manhole; the registry keeps running."

        def __call__(self, *args):
            print(repr(self))

    def on_reactor(function, *args, **kwargs):
        """Call function on the reactor thread; its value (awaited)."""
        return call_on_reactor(reactor, function, *args, **kwargs)

    return {
        "registry": registry,
        "config": config,
        "maintenance": maintenance,
        "repos": _on_reactor(reactor, repos),
        "tags": _on_reactor(reactor, tags),
        "uploads": _on_reactor(reactor, uploads),
        "gc": _on_reactor(reactor, gc),
        "purge_uploads": _on_reactor(reactor, purge_uploads),
        "rebuild_referrers": _on_reactor(reactor, rebuild_referrers),
        "delete_repository": _on_reactor(reactor, delete_repository),
        "usage": _on_reactor(reactor, usage),
        "retention": _on_reactor(reactor, run_retention),
        "readonly": _on_reactor(reactor, readonly),
        "stats": _on_reactor(reactor, stats),
        "on_reactor": on_reactor,
        "help_registryd": help_registryd,
        "exit": _Leave(),
        "quit": _Leave(),
    }


# --- sessions ------------------------------------------------------------------


def _format(result):
    if isinstance(result, str):
        return result
    return pprint.pformat(result, width=100, sort_dicts=False)


def _value(reactor, value):
    """A statement's value, a Deferred's or coroutine's result if it is one
    (waited for on the reactor, as helpers do)."""
    if isinstance(value, defer.Deferred) or inspect.isawaitable(value):
        return call_on_reactor(reactor, lambda: value)
    return value


async def run_source(source, namespace, runner, started=None):
    """Run one command (``ssh host 'expr'``) in a statement thread of
    ``runner``; (stdout text, stderr text, exit status).  An expression's
    value is printed, awaited first if it is a Deferred or coroutine; an
    error is one line on stderr.  ``started(statement)``, if given, is told
    of the statement (to stop it when the client goes)."""
    out = []

    def statement():
        try:
            code = compile(source, "<ssh>", "eval")
            expression = True
        except SyntaxError:
            code = compile(source, "<ssh>", "exec")
            expression = False
        result = _value(runner.reactor, eval(code, namespace))
        if expression and result is not None:
            print(_format(result))

    try:
        running = runner.run(statement, out.append)
    except RuntimeError as refused:  # no thread to be had
        return "", describe(refused) + "\n", 1
    if started is not None:
        started(running)
    error = await running.done
    if error is None:
        return "".join(out), "", 0
    if isinstance(error, SystemExit):
        return "".join(out), "", error.code if isinstance(error.code, int) else 1
    return "".join(out), running.description + "\n", 1


class _Pipe:
    """The little of a transport the two protocols below use of each other."""

    def __init__(self, write, loseConnection):
        self.write = write
        self.loseConnection = loseConnection

    def writeSequence(self, data):
        self.write(b"".join(data))


class _ShellTransport:
    """Joins an SSH session channel to the insults terminal protocol running
    the prompt (what conch's TerminalSessionTransport does), but ends the
    session with exit status 0, as a shell does: OpenSSH reports 255 for a
    session that closes without one."""

    def __init__(self, proto, chained, avatar, width, height):
        self.proto = proto
        self.chainedProtocol = chained
        session = proto.session
        proto.makeConnection(_Pipe(chained.dataReceived, lambda: avatar.conn.sendClose(session)))

        def end():
            proto.processEnded(Failure(ProcessDone(None)))

        chained.makeConnection(_Pipe(proto.write, end))
        chained.terminalProtocol.terminalSize(width, height)


class RegistryManhole(manhole.Manhole):
    """The interactive prompt, with a banner listing the helpers; each
    statement runs in a thread of ``runner`` (keys typed meanwhile are
    ignored but ^C, which stops it, and ^D, which stops it and leaves)."""

    def __init__(self, namespace, runner):
        super().__init__(namespace)
        self.runner = runner
        self.source_lines = []
        self.statement = None

    def initializeScreen(self):
        self.terminal.reset()
        self.terminal.write(HELP.replace("\n", "\r\n").encode("utf-8"))
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    def lineReceived(self, line):
        if self.statement is not None:
            return
        self.source_lines.append(line.decode("utf-8", "replace"))
        try:
            code = codeop.compile_command("\n".join(self.source_lines), "<manhole>", "single")
        except (SyntaxError, OverflowError, ValueError) as error:
            self.source_lines = []
            self._ended(describe(error))
            return
        if code is None:  # more to come
            self.pn = 1
            self._prompt()
            return
        self.source_lines = []
        self.pn = 0
        try:
            self.statement = self.runner.run(
                lambda: exec(code, self.namespace), self._output, self._display
            )
        except RuntimeError as error:  # no thread to be had
            self._ended(describe(error))
            return
        self.statement.done.addCallback(
            lambda error, statement=self.statement: self._ended(statement.description)
        )

    def _display(self, value):
        """The display hook, in the statement's thread."""
        value = _value(self.runner.reactor, value)
        if value is not None:
            self.namespace["_"] = value
            print(repr(value))

    def _output(self, text):
        self.terminal.write(text.encode("utf-8", "replace"))

    def _ended(self, description):
        """A statement ended (with the error in one line, or None)."""
        self.statement = None
        if self.terminal is None or self.terminal.transport is None:
            return
        if description is not None:
            if compat.manhole_needs_newline(self):
                self.terminal.nextLine()
            self.terminal.write(description.encode("utf-8", "replace"))
        self._prompt()

    def _prompt(self):
        if compat.manhole_needs_newline(self):
            self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])

    def characterReceived(self, ch, moreCharactersComing):
        if self.statement is None:
            super().characterReceived(ch, moreCharactersComing)

    def handle_INT(self):
        if self.statement is not None:
            self.runner.interrupt(self.statement)
        else:
            self.source_lines = []
            super().handle_INT()

    def handle_QUIT(self):
        if self.statement is not None:
            self.runner.interrupt(self.statement)
        super().handle_QUIT()

    def connectionLost(self, reason):
        if self.statement is not None:
            self.runner.interrupt(self.statement)
        super().connectionLost(reason)


class ManholeSession(manhole_ssh.TerminalSession):
    """A session: the prompt (with or without a pty), or one command."""

    # the stub wants a TerminalSessionTransport subclass; ours wraps one without inheriting
    transportFactory = _ShellTransport  # type: ignore[assignment]
    namespace_factory = None
    runner = None
    width, height = 80, 25  # when the client asks for no pty
    _terminal = None

    def __init__(self, original):
        super().__init__(original)
        self._commands = []  # statements of execCommand

    def openShell(self, proto):
        self._terminal = self.transportFactory(
            proto,
            self.chainedProtocolFactory(),
            iconch.IConchUser(self.original),
            self.width,
            self.height,
        )

    def execCommand(self, proto, command):
        from twisted.internet import reactor

        proto.makeConnection(_Pipe(lambda data: None, lambda: None))  # stdin: ignored
        # Run on the next turn of the reactor: the reply to the exec request
        # is sent when this returns, and clients expect it before any output.
        started = defer.Deferred()
        reactor.callLater(0, started.callback, None)
        started.addCallback(
            lambda _: defer.ensureDeferred(
                run_source(
                    command.decode("utf-8", "replace"),
                    self.namespace_factory(),
                    self.runner,
                    self._commands.append,
                )
            )
        )
        running = started

        def done(outcome):
            out, err, status = outcome
            if out:
                proto.outReceived(out.encode("utf-8"))
            if err:
                proto.errReceived(err.encode("utf-8"))
            reason = ProcessDone(None) if status == 0 else ProcessTerminated(exitCode=status)
            proto.processEnded(Failure(reason))

        running.addCallback(done)
        running.addErrback(lambda failure: log.failure("manhole command failed", failure))

    def windowChanged(self, size):
        self.height, self.width = size[:2]
        if self._terminal is not None:
            self._terminal.chainedProtocol.terminalProtocol.terminalSize(self.width, self.height)

    def eofReceived(self):
        pass  # the prompt ends with ^D or exit(); a command ends by itself

    def closed(self):
        """The client went: stop its commands still running, as ^C would."""
        for statement in self._commands:
            self.runner.interrupt(statement)
        self._commands = []


@implementer(portal.IRealm)
class ManholeRealm(manhole_ssh.TerminalRealm):
    sessionFactory = ManholeSession
    # the stub wants a TerminalSessionTransport subclass; ours wraps one without inheriting
    transportFactory = _ShellTransport  # type: ignore[assignment]

    def __init__(self, namespace_factory, runner=None):
        super().__init__()
        self.namespace_factory = namespace_factory
        self.runner = runner if runner is not None else StatementRunner()
        self.chainedProtocolFactory = lambda: insults.ServerProtocol(
            RegistryManhole, namespace_factory(), self.runner
        )

    def _getAvatar(self, avatarId):
        # Overrides a private conch hook (registryd.compat checks it).
        user = super()._getAvatar(avatarId)
        session = user.original.getComponent(iconch.ISession)
        session.namespace_factory = self.namespace_factory
        session.runner = self.runner
        return user


#: Signature algorithms conch verifies for public key logins.
USER_KEY_ALGORITHMS = (
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
)


class _ServerTransport(SSHServerTransport):
    """Advertises (RFC 8308 ``server-sig-algs``) every algorithm conch
    verifies for user keys.  Conch sends only its host keys' algorithms
    there, so with an Ed25519 host key OpenSSH (8.8 and later, which no
    longer signs with SHA-1 unless told it may use rsa-sha2) would never
    offer an RSA user key."""

    def sendExtInfo(self, extensions):
        extensions = [
            (name, b",".join(USER_KEY_ALGORITHMS) if name == b"server-sig-algs" else value)
            for name, value in extensions
        ]
        super().sendExtInfo(extensions)


def make_factory(user, authorized_keys, host_key, namespace_factory, runner=None):
    """An SSH server factory: public key logins as ``user`` only; statements
    run in ``runner``'s threads (a :class:`StatementRunner` with its defaults if
    None)."""
    checker = SSHPublicKeyChecker(InMemorySSHKeyDB({user.encode("utf-8"): list(authorized_keys)}))
    realm = ManholeRealm(namespace_factory, runner)
    factory = manhole_ssh.ConchFactory(portal.Portal(realm, [checker]))
    # ConchFactory's key dicts are class attributes: never share them.
    factory.publicKeys = {host_key.sshType(): host_key.public()}
    factory.privateKeys = {host_key.sshType(): host_key}
    factory.protocol = _ServerTransport
    return factory


class ManholeService(MultiService):
    """Listens on ``manhole_config.listen`` with the manhole's SSH factory.

    Keys are loaded when the service is made, so a bad file stops start-up.
    """

    def __init__(self, manhole_config, namespace_factory, reactor=None):
        super().__init__()
        self.setName("manhole")
        self.host_key = load_or_create_host_key(manhole_config.host_key)
        self.authorized_keys = load_authorized_keys(manhole_config.authorized_keys)
        self.runner = StatementRunner(reactor, manhole_config.timelimit, manhole_config.memorylimit)
        self.factory = make_factory(
            manhole_config.user,
            self.authorized_keys,
            self.host_key,
            namespace_factory,
            self.runner,
        )
        self.listener = ListenerService(
            manhole_config.listen,
            self.factory,
            reactor=reactor,
            what=f"manhole (user {manhole_config.user}) listening on",
            scheme="ssh",
        )
        self.listener.setName(f"manhole {manhole_config.listen}")
        self.listener.setServiceParent(self)
