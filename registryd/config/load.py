"""Reading the configuration file: YAML, refusing duplicate keys, with the
line and column of a syntax error in its one-line message."""

import yaml

from registryd.config.errors import ConfigError
from registryd.config.root import Config, parse_config


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


def load_config(path):
    """Read and validate the configuration file at ``path``.

    :param path: a file name, or None for the defaults (filesystem storage
        in ``./registry-data``, listening on ``tcp:5000``).
    :raises ConfigError: the file cannot be read, is not YAML, or holds keys
        or values registryd cannot use (all of them, one line each).
    :rtype: :class:`Config`
    """
    if path is None:
        return Config()
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise ConfigError(f"cannot read configuration file: {error.strerror or error}") from None
    return parse_config(load_yaml(data))
