"""The configuration schema and the one parser that reads every section.

A section is a frozen attrs class whose fields carry a :class:`Key` in
their metadata (made with :func:`setting`): the YAML key (a dotted path
inside the section when Distribution nests what registryd keeps flat, e.g.
``delete.enabled``), its type, its documentation, and whether it is
required or secret.  Keys that fill no field are declared on the class with
:func:`section`: Distribution internals that are type-checked and ignored
(:func:`ignored`), Distribution features registryd lacks (:func:`not_yet`,
refused by name), and inputs the section's ``finish`` function combines
(:func:`extra`).  Keys of one definition are thus written once, and
:func:`iter_keys` lists every key path (for the reference, the README test,
environment overrides and ``check-config``).

:class:`Parser` walks a YAML mapping against that description in document
order and collects every problem as a one-line :class:`ConfigError`
instead of stopping at the first, so an operator sees all of a file's
mistakes at once.  A section with a problem produces no object, so checks
across its keys (``finish``) only ever see valid values, and report nothing
spurious.
"""

import attr

from registryd.config.errors import ConfigError, describe, join
from registryd.config.types import Mapping, ValueType

#: The attrs metadata entry holding a field's Key.
METADATA = "registryd.config"


@attr.s(frozen=True, slots=True, eq=False)
class Key:
    """One YAML key of a section: where it goes, how it is read, what it means."""

    #: dotted path inside the section ("delete.enabled")
    path = attr.ib()
    #: a value type (registryd.config.types), or None for refused keys
    type = attr.ib()
    doc = attr.ib(default="")
    #: the attrs field it fills; None: handed to the section's finish
    field = attr.ib(default=None)
    #: the problem reported when the key is missing from its mapping; None: optional
    required = attr.ib(default=None)
    #: a password or key: masked wherever a configuration is shown
    secret = attr.ib(default=False)
    #: Distribution internals: type-checked, then without effect
    ignored = attr.ib(default=False)
    #: Distribution's key for a feature registryd lacks: refused by name
    not_yet = attr.ib(default=False)
    #: registryd's own key, not Distribution's
    own = attr.ib(default=False)
    #: applied to the value read (e.g. ``disabled`` -> enabled)
    convert = attr.ib(default=None)
    #: the value without the key, for the reference (fields: their default)
    default = attr.ib(default=None)


def setting(
    key,
    type,
    doc,
    *,
    default=attr.NOTHING,
    factory=None,
    required=None,
    secret=False,
    own=False,
    convert=None,
    converter=None,
    shown=None,
):
    """An attrs field read from the YAML key ``key`` (see :class:`Key`); ``shown``
    is the key's default for the reference when it is not the field's
    (a converted key such as ``accesslog.disabled``)."""
    if factory is not None:
        default = attr.Factory(factory)
    meta = Key(
        key, type, doc, required=required, secret=secret, own=own, convert=convert, default=shown
    )
    return attr.ib(default=default, converter=converter, repr=not secret, metadata={METADATA: meta})


#: The attrs metadata entry naming, for a derived field, the key(s) it
#: comes from as the file spells them, from the top (for messages).
WRITTEN = "registryd.config.written"


def derived(default=attr.NOTHING, written=None, **kwargs):
    """An attrs field no key fills directly: the section's finish sets it
    from ``written`` (the key path(s) it comes from, from the top)."""
    metadata = {WRITTEN: written} if written else {}
    return attr.ib(default=default, metadata=metadata, **kwargs)


def extra(key, type, doc, *, required=None, secret=False, own=False, convert=None, default=None):
    """A key read for the section's finish function rather than a field."""
    return Key(
        key, type, doc, required=required, secret=secret, own=own, convert=convert, default=default
    )


def ignored(key, type, doc):
    """A Distribution key that only tunes its internals: checked, without effect."""
    return Key(key, type, doc, ignored=True)


def not_yet(key, doc=""):
    """A Distribution key for a feature registryd lacks: refused, naming it."""
    return Key(key, None, doc, not_yet=True)


def as_tuple(items):
    """An attrs converter: ``items`` as a tuple.  (A Python function, because
    attrs inspects a converter's signature, and for the builtin ``tuple``
    that costs about as much as building the class.)"""
    return tuple(items)


class Group(dict):
    """A YAML mapping inside a section that no class stands for
    (``storage.delete``): its keys by name (a Key or a nested Group)."""


@attr.s(frozen=True, eq=False)
class Section:
    """How one attrs class is read: its keys, as a tree, and its hooks."""

    cls = attr.ib()
    #: every Key, fields first, in declaration order
    keys = attr.ib()
    tree = attr.ib()
    #: finish(found) -> the section's object (default: cls(**found.values))
    finish = attr.ib(default=None)
    #: rest(found, key, value, path): a key the tree lacks (storage drivers)
    rest = attr.ib(default=None)
    #: what rest accepts, for messages and the reference
    rest_doc = attr.ib(default=None)


def section(*keys, finish=None, rest=None, rest_doc=None):
    """Class decorator (above ``@attr.s``): describe how the class is read."""

    def decorate(cls):
        fields = [
            attr.evolve(
                field.metadata[METADATA],
                field=field.name,
                default=_field_default(field)
                if field.metadata[METADATA].default is None
                else field.metadata[METADATA].default,
            )
            for field in attr.fields(cls)
            if METADATA in field.metadata
        ]
        every = tuple(fields) + tuple(keys)
        tree = Group()
        for key in every:
            node = tree
            *groups, name = key.path.split(".")
            for group in groups:
                node = node.setdefault(group, Group())
            assert name not in node, f"{cls.__name__}: {key.path} twice"
            node[name] = key
        cls.__config_section__ = Section(cls, every, tree, finish, rest, rest_doc)
        return cls

    return decorate


def _field_default(field):
    if isinstance(field.default, attr.Factory):
        return field.default.factory() if not field.default.takes_self else None
    return None if field.default is attr.NOTHING else field.default


def spec(cls):
    """The :class:`Section` of a section class."""
    return cls.__config_section__


#: What a value or section with a problem reads as (its error is collected).
INVALID = type("Invalid", (), {"__repr__": lambda self: "INVALID"})()


@attr.s(slots=True, eq=False)
class Found:
    """What one section's keys gave, for its finish and rest functions."""

    cls = attr.ib()
    path = attr.ib()
    raw = attr.ib()
    values: dict = attr.ib(factory=dict)  # field -> value
    extras: dict = attr.ib(factory=dict)  # key path -> value, for extra() keys
    paths: dict = attr.ib(factory=dict)  # key path -> full dotted path

    def path_of(self, key):
        """The full path of ``key`` (a dotted path inside the section)."""
        return self.paths.get(key) or join(self.path, key)

    def build(self, **changes):
        """The section's object from the values read, with ``changes``."""
        return self.cls(**dict(self.values, **changes))


class Parser:
    """Reads sections and values, collecting every error in document order."""

    def __init__(self):
        self.errors = []

    def read(self, value_type, value, path):
        """``value_type``'s reading of ``value``, or :data:`INVALID` (error kept)."""
        try:
            return value_type.read(value, path, self)
        except ConfigError as error:
            self.errors.extend(error.errors)
            return INVALID

    def section(self, cls, value, path):
        """The object of section class ``cls`` for the mapping ``value``, or
        :data:`INVALID` if any of its keys had a problem."""
        description = spec(cls)
        mapping = Mapping().check(value, path)
        found = Found(cls, path, mapping)
        before = len(self.errors)
        self._walk(description, description.tree, mapping, path, found, top=True)
        if len(self.errors) > before:
            return INVALID
        try:
            if description.finish is not None:
                return description.finish(found)
            return found.build()
        except ConfigError as error:
            self.errors.extend(error.errors)
            return INVALID

    def _walk(self, description, tree, mapping, path, found, top):
        for key, item in mapping.items():
            key_path = join(path, key)
            if not isinstance(key, str):
                self.errors.append(ConfigError(key_path, "keys must be strings"))
                continue
            node = tree.get(key)
            if node is None and top and description.rest is not None:
                try:
                    description.rest(found, key, item, key_path)
                except ConfigError as error:
                    self.errors.extend(error.errors)
            elif node is None or (isinstance(node, Key) and node.not_yet):
                self.errors.append(_unsupported(key_path, node is not None, tree, description, top))
            elif isinstance(node, Group):
                try:
                    inner = Mapping().check(item, key_path)
                except ConfigError as error:
                    self.errors.append(error)
                    continue
                self._walk(description, node, inner, key_path, found, top=False)
            else:
                result = self.read(node.type, item, key_path)
                if result is INVALID or node.ignored:
                    continue
                if node.convert is not None:
                    result = node.convert(result)
                if node.field is not None:
                    found.values[node.field] = result
                else:
                    found.extras[node.path] = result
                found.paths[node.path] = key_path
        for name, node in tree.items():
            if isinstance(node, Key) and node.required and name not in mapping:
                self.errors.append(ConfigError(join(path, name), node.required))


def _unsupported(path, known, tree, description, top):
    """The error for a key without a place in ``tree``: "not supported by
    registryd yet" for Distribution's, "unknown key" otherwise; either way
    listing what is supported here."""
    names = [name for name, node in tree.items() if not (isinstance(node, Key) and node.not_yet)]
    supported = ", ".join(sorted(names)) or "nothing"
    if top and description.rest_doc:
        supported += f" and {description.rest_doc}"
    if known:
        return ConfigError(path, f"not supported by registryd yet (supported here: {supported})")
    return ConfigError(path, f"unknown key, not supported (supported here: {supported})")


class SectionOf(ValueType):
    """A nested section: a mapping read by its class's description."""

    def __init__(self, cls):
        self.cls = cls
        self.name = "mapping"

    def read(self, value, path, parser=None):
        return _with_parser(parser, lambda parser: parser.section(self.cls, value, path))


class ListOf(ValueType):
    """A list whose items are ``item`` (null: an empty list)."""

    def __init__(
        self,
        item,
        message="expected a list, got {got}",
        nonempty=False,
        nullable=True,
        most=None,
        too_many=None,
    ):
        self.item = item
        self.message = message
        self.nonempty = nonempty
        self.nullable = nullable and not nonempty
        #: at most this many items; the first one over is refused with too_many
        self.most = most
        self.too_many = too_many
        self.name = f"list of {item.name}"

    def read(self, value, path, parser=None):
        if value is None and self.nullable:
            return []
        if not isinstance(value, list) or (self.nonempty and not value):
            raise ConfigError(path, self.message.format(got=describe(value)))

        return _with_parser(parser, lambda parser: self._items(parser, value, path))

    def _items(self, parser, value, path):
        read = [
            parser.read(self.item, item, f"{path}[{index}]") for index, item in enumerate(value)
        ]
        if any(item is INVALID for item in read):
            return INVALID
        if self.most is not None and len(read) > self.most:
            raise ConfigError(f"{path}[{self.most}]", self.too_many)
        return read


def _with_parser(parser, function):
    """``function(parser)``; without a parser (a type used on its own), with
    a fresh one whose errors are raised."""
    if parser is not None:
        return function(parser)
    parser = Parser()
    result = function(parser)
    if parser.errors:
        raise ConfigError.of(parser.errors)
    return result


# --- walking the schema -----------------------------------------------------


@attr.s(frozen=True, slots=True, eq=False)
class KeyInfo:
    """One key path of the whole configuration, for references and tools."""

    path = attr.ib()  # "storage.maintenance.uploadpurging.age", "health.http[].uri"
    key = attr.ib()  # the Key


def iter_keys(cls, prefix=""):
    """Every key path of section class ``cls`` (and its nested sections),
    in declaration order, as :class:`KeyInfo`; a nested section's own key comes
    before its keys."""
    for key in spec(cls).keys:
        path = join(prefix, key.path)
        yield KeyInfo(path, key)
        nested, suffix = key.type, ""
        if isinstance(nested, ListOf):
            nested, suffix = nested.item, "[]"
        if isinstance(nested, SectionOf):
            yield from iter_keys(nested.cls, path + suffix)


def find_key(cls, path):
    """The :class:`KeyInfo` of the dotted ``path`` (list items as ``[]``), or None."""
    for info in iter_keys(cls):
        if info.path == path:
            return info
    return None


def written_keys(cls, attribute_prefix="", key_prefix=""):
    """(attribute path, key path as written) for every field of ``cls`` and
    its nested sections: ``("gc.grace_period", "gc.graceperiod")``.
    Messages about a loaded configuration name what the file says."""
    for field in attr.fields(cls):
        attribute = join(attribute_prefix, field.name)
        key = field.metadata.get(METADATA)
        if key is not None:
            path = join(key_prefix, key.path)
            yield attribute, path
            if isinstance(key.type, SectionOf):
                yield from written_keys(key.type.cls, attribute, path)
        elif WRITTEN in field.metadata:
            yield attribute, field.metadata[WRITTEN]
            default = field.default
            if isinstance(default, attr.Factory) and attr.has(default.factory):
                yield from written_keys(default.factory, attribute, key_prefix)
