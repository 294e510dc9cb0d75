"""The interfaces registryd's pieces are written against.

Storage is the pluggable part: a backend is one provider of
:class:`IStorageDriver`, made from configuration by a provider of
:class:`IStorageDriverFactory` that Twisted's plugin system finds in the
``registryd.plugins`` package.  Third parties ship a module in that package
(``registryd/plugins/mydriver.py``) in their own distribution.

The driver interface is deliberately small and path based, like CNCF
Distribution's ``StorageDriver``: drivers know paths and bytes, nothing about
repositories or digests.  Paths are ``/``-separated strings starting with
``/`` (``/docker/registry/v2/blobs/...``); a driver maps them under its own
root.  Every method returns a Deferred.  Large data never passes as one
``bytes``: readers hand out chunks, writers take them, one at a time.
"""

from zope.interface import Attribute, Interface


class IStorageDriver(Interface):
    """A place to keep files: a directory, a bucket, memory."""

    name = Attribute("The driver's name as written in configuration, e.g. 'filesystem'.")

    def get_content(path):
        """Read a whole small file.

        Only for small files (links, manifests, upload state).
        :returns: Deferred firing with ``bytes``; fails with PathNotFound.
        """

    def put_content(path, content):
        """Write a whole small file, atomically replacing any previous one.

        Readers see either the old or the new content, never a mix or a
        partial file.  Parent directories are created as needed.
        :returns: Deferred firing with None.
        """

    def reader(path, offset=0):
        """Open a file for streaming from ``offset``.

        :returns: Deferred firing with an :class:`IStorageReader`; fails with
            PathNotFound, or InvalidOffset when offset is past the end.
        """

    def writer(path, append=False):
        """Open a file for streaming writes.

        With ``append=False`` any existing file is replaced (truncated to 0);
        with ``append=True`` writing continues after its current end, and a
        missing file starts empty.  A writer's bytes may be visible at ``path``
        before ``commit``: callers write to private paths (uploads) and make
        results visible with ``move``.  They may also stay out of sight
        until ``commit`` (an S3 multipart upload): then only an appending
        writer's ``size`` counts them, and ``stat`` and ``reader`` see the
        file as it was last committed.
        :returns: Deferred firing with an :class:`IStorageWriter`.
        """

    def stat(path):
        """Describe a file or directory.

        :returns: Deferred firing with a ``FileInfo``; fails with PathNotFound.
        """

    def list(path):
        """List the names directly inside a directory, sorted.

        :returns: Deferred firing with a list of ``str`` names (not paths);
            fails with PathNotFound if ``path`` is not a directory.
        """

    def list_many(paths):
        """List several directories at once.

        Walks over many small directories (the catalog) are bound by the
        latency of each call, not its work; a driver answers this in one
        round trip where it can (one thread hop, concurrent requests).
        :returns: Deferred firing with a list, in the order of ``paths``, of
            sorted name lists, or None for a path that is not a directory.
        """

    def move(source, destination):
        """Move a file, replacing ``destination`` atomically.

        :returns: Deferred firing with None; PathNotFound if source is missing.
        """

    def delete(path):
        """Delete a file, or a directory with everything under it.

        :returns: Deferred firing with None; PathNotFound if nothing is there.
        """

    def redirect_url(path, method):
        """A URL a client may fetch ``path`` from directly (e.g. presigned).

        :returns: Deferred firing with a ``str`` URL, or None when the driver
            does not redirect.
        """


class IStorageReader(Interface):
    """A file open for streaming reads, from some offset to its end."""

    size = Attribute("The file's total size in bytes.")
    offset = Attribute("The position of the next byte to be read.")

    def read(length):
        """Read up to ``length`` bytes.

        :returns: Deferred firing with ``bytes``; ``b""`` at end of file.
        """

    def close():
        """Release the reader.  :returns: Deferred firing with None."""


class IStorageWriter(Interface):
    """A file open for streaming writes.

    Writes are applied in the order they are made, even if the caller does
    not wait for one to finish before making the next.
    """

    size = Attribute(
        "Bytes in the file, counting those written before this writer was "
        "opened (append) and every write made so far, finished or not."
    )

    def write(data):
        """Append ``data``.  :returns: Deferred firing with None when written."""

    def close():
        """Stop writing, keeping what was written so another writer can
        append later (a resumable upload).  Waits for pending writes.
        :returns: Deferred firing with None.
        """

    def commit():
        """Make everything written durable and complete; the writer is closed.
        :returns: Deferred firing with None.
        """

    def cancel():
        """Discard the file; the writer is closed.
        :returns: Deferred firing with None.
        """


class IObservedWriter(Interface):
    """A writer that can also hand each piece it writes to an observer, in
    the thread job that writes it: an optional capability of
    :class:`IStorageWriter` providers whose writes run in threads of their
    own (the filesystem driver's).

    An upload's bytes must be both hashed and written.  Done as two thread
    hand-offs per piece (a hasher thread and the writer's), each costs a
    futex wake-up, the GIL passed back and forth and a reactor wake-up for
    its Deferred: during an image push, more of the server's CPU than the
    hashing itself.  With this, one job per piece does both
    (:mod:`registryd.storage.upload_sinks`).  Drivers without it (S3,
    memory) keep the two separate sinks.
    """

    def write_observed(data, observer):
        """Append ``data`` as ``write`` does; once it is written, call
        ``observer(data)`` in the same thread job, in write order.

        A failed write does not call the observer, and neither does any
        write after it (the writer refuses to write past a gap).
        :returns: Deferred firing with None when both are done; it fails
            with the write's or the observer's error.
        """

    def drain():
        """A Deferred firing with None once every write made so far,
        observer included, has finished (succeeded or failed); cancelling
        the Deferred of a write does not stop it, so this is how a caller
        knows its observer is no longer running."""


class ILocalMetadata(Interface):
    """A marker of storage drivers whose metadata reads (a small file, a
    stat) are local and cheap: a filesystem, memory.

    With a ``redis`` section (``redis.metadatacache: auto``, the default)
    the nodes' metadata cache (:mod:`registryd.storage.shared_cache`) is
    consulted only for drivers *without* this marker: one Redis call
    (about 290 µs of CPU through redis-py's threads) saves 1 to 3 requests
    on S3, but costs more than the one stat with which the per-process
    caches (:mod:`registryd.storage.cache`) revalidate an entry on a
    local or shared filesystem.  A third-party driver that does not
    declare itself is taken to be remote, so it keeps the cache.
    """


class IImmediateMetadata(Interface):
    """Storage drivers that can answer a stat or a listing at once, on the
    reactor thread, when that cannot block: the filesystem from the
    kernel's caches (:mod:`registryd.storage.drivers.nowait`), memory.

    The hot reads (a blob ``HEAD``'s two stats, a tags list, a tag's
    revalidation) try these first and fall back to :class:`IStorageDriver`'s
    Deferred methods on None: the Deferreds, their callbacks and the
    instrumentation's around a stat answered from the caches cost twice the
    stat (:func:`registryd.storage.walking.stat_path`).
    """

    def stat_now(path):
        """What ``stat(path)`` would give, if known without waiting.

        :returns: a ``FileInfo``, or None when only ``stat`` can tell;
            raises PathNotFound.
        """

    def list_now(path):
        """What ``list(path)`` would give, if known without waiting.

        :returns: a sorted list of names, or None when only ``list`` can
            tell; raises PathNotFound.
        """


class IStorageDriverFactory(Interface):
    """Makes a storage driver from its configuration section.

    Providers are found with ``twisted.plugin.getPlugins(IStorageDriverFactory,
    registryd.plugins)``; each one is a module-level object in a module of
    the ``registryd.plugins`` package that provides this interface (and
    ``twisted.plugin.IPlugin``).
    """

    name = Attribute("Configuration name of the driver, e.g. 's3'.")

    def create(parameters):
        """Make a driver.

        :param parameters: the driver's section of the configuration
            (``storage.<name>``), a dict (empty when the section is empty).
        :raises registryd.config.ConfigError: for an unknown key or a bad
            value, naming it.
        :returns: an :class:`IStorageDriver` provider.
        """


class IAuthorizer(Interface):
    """Decides, before any storage work, whether a request may proceed.

    Every route names the accesses it needs (``registryd.auth.scope.Access``
    values: ``pull`` on a repository for a GET, ``pull`` and ``push`` for an
    upload, ``*`` on ``registry:catalog``...); an authorizer authenticates
    the caller from the request's headers and checks those accesses.
    """

    def authorize(request, needed):
        """Authenticate the caller and check ``needed`` (a sequence of
        ``Access``; empty for ``/v2/``, which only needs a known caller).

        :returns: Deferred firing with an :class:`IGrant`; or failing with
            ``registryd.errors.Unauthorized`` (no, malformed or wrong
            credentials; carries the ``WWW-Authenticate`` challenge) or
            ``registryd.errors.Denied`` (a known caller lacking an action).
        """


class IGrant(Interface):
    """What an authorized caller may do beyond the request's own needs:
    read other repositories (cross-repository mounts, the catalog)."""

    user = Attribute("The authenticated user name, or None for an anonymous caller.")

    def allows(type, name, action):
        """True if the caller may do ``action`` (``pull``, ``push``,
        ``delete``) on resource ``type``:``name`` (``repository``:``a/b``)."""

    def may_list(name):
        """True if ``/v2/_catalog`` shows repository ``name`` to the caller."""


class IAccessPolicy(Interface):
    """Maps users to the repository actions they may perform: registryd's
    own access control (``auth.access`` rules), used directly with htpasswd
    and by the built-in token server when it grants scopes."""

    def actions(user, repository):
        """The concrete actions (``frozenset`` of ``pull``/``push``/``delete``)
        ``user`` (None: anonymous) may perform on repository ``repository``."""

    def may_list_catalog(user):
        """True if ``user`` (None: anonymous) may list the catalog (which is
        then filtered to the repositories the user may pull)."""


# --- the storage model ----------------------------------------------------------
#
# What the HTTP handlers, garbage collection, maintenance and the
# pull-through cache work with (Distribution's BlobStore, ManifestService,
# TagService, BlobWriter...): repositories and their stores, never paths.
# ``registryd.storage`` implements them on a driver; ``registryd.proxy``
# implements the repository ones again around those, fetching from an
# upstream registry what is not stored yet.  Methods returning results
# are coroutines (or return Deferreds).


class IBlobStore(Interface):
    """The registry-wide blobs, by digest (Distribution's global blob store)."""

    def stat(digest, stored_as=None):
        """The blob's ``BlobInfo``; raises ``errors.BlobUnknown``."""

    def open(blob, offset=0):
        """An :class:`IStorageReader` of a stat'ed blob's data from ``offset``."""

    def get(digest):
        """A small blob's whole content (a manifest); raises BlobUnknown."""

    def put(digest, content):
        """Store a small blob whose digest the caller computed."""

    def commit(upload, digest, size):
        """Make a verified upload's data the blob ``digest``, atomically."""

    def enumerate():
        """Every blob's digest in storage (data present or not)."""


class ILinkedBlobStore(Interface):
    """The blobs one repository has (Distribution's linked blob store)."""

    name = Attribute("The repository's name.")

    def stat(digest):
        """The ``BlobInfo`` of a blob this repository has; raises BlobUnknown.
        Its ``size`` may be None (not known before it is read) and it may
        be ``seekable=False`` (readable only from its start)."""

    def has(digest):
        """Whether the repository has blob ``digest``."""

    def open(blob, offset=0):
        """An :class:`IStorageReader` of a stat'ed blob from ``offset``: what the
        blob sender (``registryd.http.web.BlobSender``) streams to the client."""

    def redirect(blob, method):
        """A URL the client may fetch the blob from itself, or None."""

    def link(digest, stored_as=None):
        """Make blob ``digest`` (data under ``stored_as``, if other) part of
        this repository."""

    def delete(digest):
        """Unlink the blob (the API's DELETE); raises Unsupported when
        deletes are disabled, BlobUnknown when it is not linked."""

    def mount(digest, source_name):
        """Link a blob of repository ``source_name``; its ``BlobInfo``, or None."""

    def enumerate():
        """The digests this repository links."""


class IManifestStore(Interface):
    """The manifests of one repository (Distribution's ManifestService)."""

    name = Attribute("The repository's name.")

    def has(digest):
        """Whether revision ``digest`` is in the repository."""

    def resolve(reference):
        """The digest a tag or digest reference names; raises ManifestUnknown."""

    def get(reference, accept=None):
        """The ``StoredManifest`` ``reference`` names; raises ManifestUnknown.
        ``accept`` is the client's Accept header (what a pull-through cache
        asks upstream for)."""

    def put(reference, body, content_type, tags=(), allow_sparse=False, verify=True):
        """Validate, store and tag a manifest; its ``StoredManifest``."""

    def delete(reference, removed_tags=None):
        """Delete a revision (digest) or a tag (the API's DELETE)."""

    def enumerate():
        """The digests of the repository's revisions, sorted."""

    def referrers(subject, artifact_type=None):
        """Descriptors of the manifests whose subject is ``subject``."""


class ITagStore(Interface):
    """The tags of one repository (Distribution's TagService)."""

    name = Attribute("The repository's name.")

    def get(tag):
        """The digest ``tag`` names, or None."""

    def tag(tag, digest):
        """Point ``tag`` at ``digest``."""

    def untag(tag):
        """Remove ``tag``; whether it was there."""

    def all():
        """The tags the tags list shows, sorted; raises NameUnknown."""

    def enumerate():
        """Every tag in storage, leniently (what garbage collection keeps)."""

    def history(tag):
        """Every digest ``tag`` has named."""


class IUploadStore(Interface):
    """The blob uploads of one repository."""

    name = Attribute("The repository's name.")

    def start(algorithm="sha256"):
        """A new upload, open (an async context manager) until closed."""

    def resume(upload_id):
        """Upload ``upload_id``, locked and with one appending writer open
        until closed; raises BlobUploadUnknown."""

    def status(upload_id):
        """Upload ``upload_id`` as it stands (size), already closed."""

    def enumerate():
        """The repository's uploads in storage (``UploadInfo`` records)."""


class IRepository(Interface):
    """One repository and its stores (Distribution's Repository)."""

    name = Attribute("The repository's name.")
    blobs = Attribute("The repository's :class:`ILinkedBlobStore`.")
    manifests = Attribute("The repository's :class:`IManifestStore`.")
    tags = Attribute("The repository's :class:`ITagStore`.")
    uploads = Attribute("The repository's :class:`IUploadStore`.")


class ISharedState(Interface):
    """State the registryd nodes serving one storage backend share: locks
    and leases, counters, expiring values, sets of members that expire.

    Names are plain strings chosen by the callers (``brake:...``,
    ``lease:gc``); an implementation may prefix them.  Durations are
    seconds.  Every method returns a Deferred and never blocks the reactor.
    One node without Redis uses the in-process implementation
    (``registryd.shared.memory``); nodes sharing a Redis use
    ``registryd.shared.redis_state``, whose methods fail with
    :class:`registryd.shared.SharedStateUnavailable` when Redis cannot answer
    within its timeouts, so that callers can fall back to what they know
    locally.
    """

    shared = Attribute("True when other nodes see this state (Redis), False in process.")

    def acquire(name, token, ttl):
        """Take the lock or lease ``name`` for ``token`` (str) for ``ttl``
        seconds unless someone holds it.  :return: Deferred firing True if taken."""

    def extend(name, token, ttl):
        """Make ``token``'s hold of ``name`` last ``ttl`` seconds from now.
        :return: Deferred firing False if ``token`` does not hold it (any more)."""

    def release(name, token):
        """Let go of ``name`` if ``token`` holds it.  :return: Deferred firing True if it did."""

    def remaining(name):
        """:return: Deferred firing with the seconds until ``name`` (a lock,
        lease or value) expires, or None if it does not exist or never expires."""

    def get(name):
        """:return: Deferred firing with the bytes stored at ``name``, or None."""

    def set(name, value, ttl=None):
        """Store ``value`` (bytes) at ``name``, expiring after ``ttl`` seconds if given."""

    def delete(name):
        """Remove ``name`` (value, counter or lock, whoever holds it)."""

    def incr(name, amount=1, ttl=None):
        """Add ``amount`` to the counter ``name`` (0 if absent); with ``ttl``,
        the counter expires ``ttl`` seconds after this change.
        :return: Deferred firing with the new value."""

    def add_member(name, member, ttl):
        """Put ``member`` (str) in the set ``name`` for ``ttl`` seconds (a
        member added again lasts until the later expiry)."""

    def remove_member(name, member):
        """Take ``member`` out of the set ``name``."""

    def is_member(name, member):
        """:return: Deferred firing True if ``member`` is in ``name`` and has not expired."""

    def members(name):
        """:return: Deferred firing with the list of ``name``'s members that have not expired."""

    def merge_latest(name, values, ttl):
        """Merge ``values`` (``{field: number}``) into the table ``name``,
        keeping the larger number of each field (times only grow, so any
        order of merges by any nodes gives the same table); the table
        expires ``ttl`` seconds after this merge."""

    def latest(name):
        """:return: Deferred firing with the table ``name`` as
        ``{field: float}`` (empty if absent)."""

    def remove_fields(name, fields):
        """Remove fields of the table ``name``: ``fields`` is ``{field:
        bound}``, and a field goes if its bound is None or its number is
        not above the bound (so a field merged again since stays)."""

    def cache_lookup(names):
        """Entries of the nodes' metadata cache (``registryd.storage.shared_cache``).

        A member of the cache (``cache_join``) whose hold has expired may
        have missed forgetting what it wrote: the first lookup that finds
        one begins a new epoch.

        :return: Deferred firing with one ``(value, stamp)`` per name:
            ``value`` the bytes last stored by ``cache_fill`` under the current
            epoch and not forgotten since, else None; ``stamp`` what
            ``cache_fill`` needs to store a value read from storage after this
            lookup."""

    def cache_fill(name, stamp, value, ttl):
        """Store ``value`` (bytes) at the cache entry ``name`` for ``ttl``
        seconds, only if nothing forgot it and no new epoch began since the
        lookup that gave ``stamp``: a value read from storage before a write
        never lands after that write's ``cache_forget``.
        :return: Deferred firing True if stored."""

    def cache_forget(names, ttl):
        """Drop the cache entries ``names`` and make every earlier stamp of
        them stale (what is kept of them expires after ``ttl`` seconds)."""

    def cache_join(member, ttl):
        """Hold membership ``member`` (str) of the cache for ``ttl`` seconds
        from now: a node that stops renewing it (cut off from the state)
        ends the epoch when it expires."""

    def cache_new_epoch(member, ttl):
        """Hold membership ``member`` for ``ttl`` seconds and make every
        cache entry stored so far invisible to every node: what a node does
        before trusting the cache (again: after it could not reach it, its
        writes forgot nothing)."""

    def ping():
        """:return: Deferred firing once the state answers (fails if it cannot)."""

    def close():
        """Release connections and threads.  :return: Deferred."""
