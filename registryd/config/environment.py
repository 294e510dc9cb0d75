"""``REGISTRY_*`` environment variables: CNCF Distribution's overrides of
the configuration file, with Distribution's rules (its
``configuration/parser.go``), as a transform of the raw YAML mapping.

How ``registry:2`` is configured in compose files and Helm charts:
``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/x`` sets
``storage.filesystem.rootdirectory`` whatever the file says.  The rules:

* The name after ``REGISTRY_`` is split at each ``_``; each part names one
  level, compared case-insensitively (Distribution compares upper case).
* The value is parsed as YAML, as a value in the file would be:
  ``REGISTRY_STORAGE_DELETE_ENABLED=true`` is a boolean,
  ``REGISTRY_NOTIFICATIONS_ENDPOINTS='[{name: a, url: ...}]'`` a list.
* A variable naming a section replaces the whole section;
  ``REGISTRY_STORAGE=s3`` (a word instead of a mapping) selects a driver as
  ``storage: s3`` does, i.e. ``{s3: {}}``; ``REGISTRY_AUTH=htpasswd`` too.
* Variables are applied in the lexical order of their names, so
  ``REGISTRY_STORAGE=s3`` first, then ``REGISTRY_STORAGE_S3_BUCKET``.
* In an open mapping (a storage driver's parameters, ``auth``, headers,
  ``log.fields``) a part matches an existing key case-insensitively, or adds
  it in lower case; a number indexes a list, one past its end appends.
* Distribution ignores (with a warning) a variable that names no field of
  its configuration: a Kubernetes service called ``registry`` sets
  ``REGISTRY_PORT`` and ``REGISTRY_SERVICE_HOST``.  registryd does the
  same for variables that match nothing Distribution or registryd knows
  (:attr:`Overrides.ignored`, logged at start-up).  A variable that does
  match a key sets it, and registryd then checks the result exactly as it
  checks the file: a key registryd does not support, or a bad value, stops
  start-up with one line naming the variable (:func:`attribute`).

registryd's own additions: a key whose name holds ``_``
(``manhole.authorized_keys``) is matched with its underscores
(``REGISTRY_MANHOLE_AUTHORIZED_KEYS``), and the YAML key names are
accepted where Distribution's Go field names differ
(``REGISTRY_NOTIFICATIONS_EVENTS_...`` as well as ``..._EVENTCONFIG_...``).

Which keys exist is the table below: Distribution's configuration
structure (its Go structs: closed sections; it decides what is ignored),
with registryd's own keys (``gc``, ``manhole``, ``ui``, ``workers``,
``proxy.maxblobsize``...) added by ``registryd.config.load`` from the
configuration schema's key walker (:func:`with_keys`); open mappings accept
any key.  This module knows nothing of registryd's configuration package.
Secret keys (masked when the configuration is shown) are the schema's
``secret`` keys and, in open mappings such as a driver's parameters, keys
named like credentials.
"""

import copy
import re

import attr
import yaml

PREFIX = "REGISTRY_"

#: Any key, any depth: Distribution's ``map[string]...`` and ``Parameters``.
OPEN = "open"


class _List:
    """A list whose items are ``item`` (a section table, OPEN or None)."""

    def __init__(self, item):
        self.item = item


def _section(**fields):
    """A closed section: env part (upper case) -> (YAML key, child).

    Keyword names are the YAML keys; ``go=NAME`` spellings (Distribution's
    Go field names where they differ) are added by :func:`_also`."""
    return {key.upper(): (key, child) for key, child in fields.items()}


def _also(section, **aliases):
    """``section`` with extra env spellings: GONAME=yamlkey."""
    for go_name, key in aliases.items():
        section[go_name.upper()] = section[key.upper()]
    return section


_LEAF = None

_TLS = _section(
    certificate=_LEAF,
    key=_LEAF,
    clientcas=_List(_LEAF),
    clientauth=_LEAF,
    minimumtls=_LEAF,
    ciphersuites=_List(_LEAF),
    letsencrypt=_section(cachefile=_LEAF, email=_LEAF, hosts=_List(_LEAF), directoryurl=_LEAF),
)

_ENDPOINT = _section(
    name=_LEAF,
    disabled=_LEAF,
    url=_LEAF,
    headers=OPEN,
    timeout=_LEAF,
    threshold=_LEAF,
    backoff=_LEAF,
    ignoredmediatypes=_List(_LEAF),
    ignore=_section(mediatypes=_List(_LEAF), actions=_List(_LEAF)),
)

_CHECK = dict(
    interval=_LEAF,
    threshold=_LEAF,
    timeout=_LEAF,
    file=_LEAF,
    uri=_LEAF,
    headers=OPEN,
    statuscode=_LEAF,
    addr=_LEAF,
)

_REDIS_OPTIONS = (
    "addrs clientname db protocol username password sentinelusername sentinelpassword "
    "maxretries minretrybackoff maxretrybackoff dialtimeout readtimeout writetimeout "
    "contexttimeoutenabled poolfifo poolsize pooltimeout minidleconns maxidleconns "
    "maxactiveconns connmaxidletime connmaxlifetime maxredirects readonly routebylatency "
    "routerandomly mastername disableidentity identitysuffix unstableresp3 "
    # Distribution 2.8's single-address keys
    "addr dialtimeout pool"
).split()

#: Distribution's configuration structure (v2.8 and v3); registryd's own
#: keys are added to it (:func:`with_keys`) by registryd.config.load.
DISTRIBUTION = _section(
    version=_LEAF,
    log=_section(
        accesslog=_section(disabled=_LEAF),
        level=_LEAF,
        formatter=_LEAF,
        fields=OPEN,
        hooks=_List(OPEN),
        reportcaller=_LEAF,
    ),
    loglevel=_LEAF,
    storage=OPEN,
    auth=OPEN,
    middleware=OPEN,
    reporting=OPEN,  # Distribution 2.8 (bugsnag, newrelic); registryd refuses it
    compatibility=OPEN,  # Distribution 2.8 (schema1); registryd refuses it
    http=_section(
        addr=_LEAF,
        net=_LEAF,
        host=_LEAF,
        prefix=_LEAF,
        secret=_LEAF,
        relativeurls=_LEAF,
        draintimeout=_LEAF,
        tls=_TLS,
        headers=OPEN,
        debug=_section(addr=_LEAF, prometheus=_section(enabled=_LEAF, path=_LEAF)),
        http2=_section(disabled=_LEAF),
        h2c=_section(enabled=_LEAF),
    ),
    notifications=_also(
        _section(
            events=_section(includereferences=_LEAF),
            endpoints=_List(_ENDPOINT),
        ),
        eventconfig="events",
    ),
    redis=_section(
        tls=_section(certificate=_LEAF, key=_LEAF, rootcas=_List(_LEAF)),
        pool=OPEN,
        **{name: _LEAF for name in _REDIS_OPTIONS if name != "pool"},
    ),
    health=_also(
        _section(
            file=_List(_section(**_CHECK)),
            http=_List(_section(**_CHECK)),
            tcp=_List(_section(**_CHECK)),
            storagedriver=_section(enabled=_LEAF, interval=_LEAF, threshold=_LEAF),
        ),
        filecheckers="file",
        httpcheckers="http",
        tcpcheckers="tcp",
    ),
    catalog=_section(maxentries=_LEAF),
    tags=_section(maxtags=_LEAF),
    proxy=_section(
        remoteurl=_LEAF,
        username=_LEAF,
        password=_LEAF,
        ttl=_LEAF,
        cachewritetimeout=_LEAF,
        exec=_section(command=_LEAF, lifetime=_LEAF),
    ),
    validation=_section(
        enabled=_LEAF,
        disabled=_LEAF,
        manifests=_section(
            urls=_section(allow=_List(_LEAF), deny=_List(_LEAF)),
            indexes=_section(platforms=_LEAF, platformlist=_List(OPEN)),
        ),
    ),
    policy=OPEN,
)


def with_keys(table, keys):
    """A copy of ``table`` with ``keys`` added: ``(path, kind)`` pairs, ``path``
    dotted with ``[]`` after a list (``auth.access.rules[].repositories``),
    ``kind`` ``"section"``, ``"list"`` (of sections), ``"values"`` (a list of
    values) or ``"value"``.  Keys inside an open mapping need no adding."""
    table = copy.deepcopy(table)
    for path, kind in keys:
        leaf = {"section": {}, "list": _List({}), "values": _List(_LEAF)}.get(kind, _LEAF)
        _add_path(table, path.split("."), leaf)
    return table


def _add_path(table, parts, leaf):
    """Add the key ``parts`` (``name`` or ``name[]`` each) to ``table``."""
    for position, part in enumerate(parts):
        if isinstance(table, _List):
            table = table.item
        if not isinstance(table, dict):
            return  # inside an open mapping: any key already matches
        name = part.removesuffix("[]")
        last = position == len(parts) - 1
        if name.upper() not in table:
            table[name.upper()] = (name, leaf if last else {})
        elif last:
            return
        table = table[name.upper()][1]


#: Key names whose values are credentials wherever they are (a driver's
#: parameters, headers): masked by :func:`masked`, with the schema's secret keys.
SECRET_KEYS = frozenset(
    {
        "password",
        "secret",
        "secretkey",
        "accesskey",
        "sessiontoken",
        "sentinelpassword",
        "apikey",
        "licensekey",
        "authorization",
    }
)
MASK = "********"


@attr.s(frozen=True)
class Override:
    """One applied variable and the key path (dotted) it set."""

    variable = attr.ib()
    path = attr.ib()


@attr.s(frozen=True)
class Overrides:
    """What :func:`apply` did: the variables applied, and those ignored."""

    applied: tuple = attr.ib(factory=tuple)
    ignored: tuple = attr.ib(factory=tuple)


def variables(environ):
    """The ``REGISTRY_*`` variables of ``environ``, in the order applied."""
    return sorted((name, value) for name, value in environ.items() if name.startswith(PREFIX))


def apply(mapping, environ, table=DISTRIBUTION, error=ValueError, loader=yaml.SafeLoader):
    """``mapping`` (the file's YAML, a dict; not changed) with the overrides
    of ``environ`` applied: ``(new mapping, :class:`Overrides`)``.

    :param table: the keys that exist (:data:`DISTRIBUTION` with registryd's).

    :param error: the exception class raised, with one line naming the
        variable, for a value that is not YAML or a bad list index.
    :param loader: the YAML loader class (the one the file is read with).
    """
    if not isinstance(mapping, dict):
        return mapping, Overrides()  # empty, or not a mapping: the parser says so
    result = copy.deepcopy(mapping)
    applied, ignored = [], []
    for name, value in variables(environ):
        parts = name[len(PREFIX) :].split("_")
        try:
            payload = yaml.load(value, Loader=loader)
        except yaml.YAMLError as problem:
            raise error(f"{name}: value is not valid YAML: {_yaml_problem(problem)}") from None
        path = _set(result, table, parts, payload, name, error)
        if path is None:
            ignored.append(name)
        else:
            applied.append(Override(name, path))
    return result, Overrides(tuple(applied), tuple(ignored))


def summary(environ, table=DISTRIBUTION):
    """The :class:`Overrides` of ``environ`` alone (which variables name a key,
    and which keys), for messages; variables whose values are bad are
    reported by :func:`apply` when the configuration is read."""
    try:
        return apply({}, environ, table)[1]
    except ValueError:
        return Overrides()


def _yaml_problem(problem):
    return " ".join(str(getattr(problem, "problem", None) or problem).split())


def _set(node, table, parts, payload, name, error):
    """Set ``payload`` at ``parts`` below the mapping ``node`` described by
    ``table``; the dotted key path set (as configuration errors name keys:
    ``notifications.endpoints[0].url``), or None if a part matches nothing
    (then nothing is changed)."""
    steps = _resolve(table, parts, name, error)
    if steps is None:
        return None
    path = []
    for position, (key, child) in enumerate(steps):
        if isinstance(key, int):
            if key > len(node):
                raise error(
                    f"{name}: {_dotted(path)}: index {key} is past the list's end "
                    f"({len(node)} items)"
                )
            if key == len(node):
                node.append(None)
        else:
            key = _existing_key(node, key) or key
        path.append(key)
        if position == len(steps) - 1:
            if isinstance(node, dict):
                _drop_other_spellings(node, key)
            node[key] = _selection(path, payload)
            return _dotted(path)
        wanted = list if isinstance(child, _List) else dict
        if not isinstance(node[key] if isinstance(key, int) else node.get(key), wanted):
            node[key] = wanted()
        node = node[key]


def _resolve(table, parts, name, error):
    """[(YAML key or list index, table below it)] for ``parts``, or None
    when a part names nothing in a closed section."""
    steps = []
    while parts:
        if isinstance(table, _List):
            if not re.fullmatch(r"[0-9]{1,9}", parts[0]):
                where = _dotted([key for key, _ in steps])
                raise error(f"{name}: {where}: expected a list index, got {parts[0][:20]!r}")
            key, child, used = int(parts[0]), table.item, 1
        elif table is OPEN or table is _LEAF:
            key, child, used = parts[0].lower(), OPEN, 1
        else:
            match = _closed_match(table, parts)
            if match is None:
                return None
            (key, child), used = match
        steps.append((key, child))
        table, parts = child, parts[used:]
    return steps


def _dotted(path):
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _closed_match(table, parts):
    """((YAML key, child), parts used) for the longest run of ``parts``
    joined by ``_`` that names a key of ``table``, or None."""
    for used in range(len(parts), 0, -1):
        found = table.get("_".join(parts[:used]).upper())
        if found is not None:
            return found, used
    return None


def _existing_key(node, part):
    """The key of the mapping ``node`` equal to ``part`` ignoring case, or None."""
    if isinstance(node, dict):
        for key in node:
            if isinstance(key, str) and key.upper() == str(part).upper():
                return key
    return None


def _drop_other_spellings(node, key):
    for other in [k for k in node if isinstance(k, str) and k != key and k.upper() == key.upper()]:
        del node[other]


def _selection(path, payload):
    """``storage: s3`` and ``auth: htpasswd`` as Distribution reads them:
    a word selects that section with no parameters."""
    if path in (["storage"], ["auth"]) and isinstance(payload, str):
        return {payload: {}}
    return payload


def attribute(error, overrides, error_class):
    """``error`` (a configuration error naming a key, ``error.key``) restated
    naming the variable that set that key, if one did; else ``error``.  An
    error standing for several (``error.errors``) has each restated."""
    several = getattr(error, "errors", (error,))
    if len(several) > 1:
        return type(error)([attribute(single, overrides, error_class) for single in several])
    key = getattr(error, "key", None)
    if not key:
        return error
    best = None
    for override in overrides.applied:
        if any(
            a == b or a.startswith((b + ".", b + "["))
            for a, b in ((key, override.path), (override.path, key))
        ):
            if best is None or len(override.path) > len(best.path):
                best = override
    if best is None:
        return error
    return error_class(best.variable, str(error))


def masked(mapping, secret_keys=SECRET_KEYS):
    """A copy of ``mapping`` with the values of keys named in ``secret_keys``
    masked."""
    if isinstance(mapping, dict):
        return {
            key: (
                MASK
                if isinstance(key, str) and key.lower() in secret_keys and value not in (None, "")
                else masked(value, secret_keys)
            )
            for key, value in mapping.items()
        }
    if isinstance(mapping, list):
        return [masked(item, secret_keys) for item in mapping]
    return mapping
