"""Reading the configuration file: YAML, refusing duplicate keys, with the
line and column of a syntax error in its one-line message."""

import functools

import yaml

from registryd.config.errors import ConfigError
from registryd.config.root import parse_config
from registryd.config.storage import DEFAULT_ROOT_DIRECTORY


class Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (and overlong integers).

    PyYAML keeps the last of two equal keys without a word; a duplicated
    ``storage`` or ``delete`` section would then silently drop settings.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<" merges may legitimately repeat keys
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        """An integer, or a YAML error naming where: Python's int() raises
        ValueError (a traceback at start-up) on more than 4300 digits."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, "integer too long", node.start_mark
            ) from None


Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)


def _yaml_error_message(error):
    """One line for a YAML error, with the line and column it names."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    if problem is None:
        text = " ".join(str(error).split())
    elif context:
        text = f"{problem} ({context})"
    else:
        text = problem
    if mark is None:
        return f"invalid YAML: {text}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {text}"


def load_yaml(data):
    """The document in ``data`` (bytes or text), through :class:`Loader`.

    :raises ConfigError: it is not YAML (one line, naming where).
    """
    try:
        return yaml.load(data, Loader=Loader)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error_message(error)) from None


@functools.lru_cache(maxsize=1)
def environment_keys():
    """(the keys REGISTRY_* variables may set, the names of secret keys):
    Distribution's structure (registryd.config.environment) with registryd's own
    keys from the schema's walker."""
    from registryd.config import environment
    from registryd.config.root import Config
    from registryd.config.schema import ListOf, SectionOf, iter_keys

    own, keys, secrets = [], [], set(environment.SECRET_KEYS)
    for info in iter_keys(Config):
        if info.key.secret:
            secrets.add(info.path.rsplit(".", 1)[-1].removesuffix("[]"))
        if info.key.own:
            own.append(info.path)
        if any(info.path == p or info.path.startswith((p + ".", p + "[")) for p in own):
            kind = info.key.type
            if isinstance(kind, ListOf):
                keys.append((info.path, "list" if isinstance(kind.item, SectionOf) else "values"))
            else:
                keys.append((info.path, "section" if isinstance(kind, SectionOf) else "value"))
    return environment.with_keys(environment.DISTRIBUTION, keys), frozenset(secrets)


def environment_summary(environ=None):
    """The :class:`registryd.config.environment.Overrides` of ``environ`` (default:
    ``os.environ``) alone: which variables name a key, which are ignored."""
    import os

    from registryd.config import environment

    return environment.summary(os.environ if environ is None else environ, environment_keys()[0])


def load_config(path, environ=None):
    """Read and validate the configuration file at ``path``, with the
    ``REGISTRY_*`` overrides of ``environ`` (:mod:`registryd.config.environment`).

    :param path: a file name, or None for the defaults (filesystem storage
        in ``./registry-data``, listening on ``tcp:5000``).
    :param environ: the environment (default: ``os.environ``).
    :raises ConfigError: the file cannot be read, is not YAML, or holds keys
        or values registryd cannot use (all of them, one line each); a
        problem with a key a variable set names the variable.
    :rtype: ``Config``
    """
    from registryd.config import environment

    mapping, overrides = read_document(path, environ)
    try:
        return parse_config(mapping)
    except ConfigError as error:
        raise environment.attribute(error, overrides, ConfigError) from None


def default_document():
    """The configuration registryd runs with when given no file, as YAML
    would say it (the base that environment overrides apply to)."""
    return {"version": "0.1", "storage": {"filesystem": {"rootdirectory": DEFAULT_ROOT_DIRECTORY}}}


def read_document(path, environ=None):
    """The raw YAML mapping of ``path`` (None: :func:`default_document`) with the
    environment's overrides applied, and the
    :class:`registryd.config.environment.Overrides` saying which applied.

    :raises ConfigError: unreadable file, invalid YAML (in the file or a
        variable's value).
    """
    import os

    from registryd.config import environment

    if path is None:
        mapping = default_document()
    else:
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except OSError as error:
            raise ConfigError(
                f"cannot read configuration file: {error.strerror or error}"
            ) from None
        mapping = load_yaml(data)
    return environment.apply(
        mapping,
        os.environ if environ is None else environ,
        environment_keys()[0],
        ConfigError,
        Loader,
    )
