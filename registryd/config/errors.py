"""ConfigError: one line per problem, naming the key to fix.

Operators read these at start-up, usually in a journal, so each error is a
single ``path.to.key: problem`` line; a file with several problems is
reported as several such lines at once (:class:`ConfigErrors`), so that one
edit-and-restart round fixes them all.
"""

import re


class ConfigError(Exception):
    """A configuration key or value registryd cannot use.

    ``str(error)`` is one line: ``"<key path>: <problem>"``, e.g.
    ``"storage.filesystem.rootdirectory: expected a string, got 5"``.

    Prefer ``ConfigError(key, problem)``.  ``ConfigError(message)`` (one
    argument, already naming its key) is accepted too, so that storage
    drivers written against the plain-exception convention still produce a
    useful message; :meth:`within` adds the section path either way.
    """

    def __init__(self, key, problem=None):
        if problem is None:
            key, problem = None, key
        self.key = key
        self.problem = problem
        super().__init__(str(self))

    def __str__(self):
        if self.key:
            return f"{self.key}: {self.problem}"
        return str(self.problem)

    @property
    def errors(self):
        """Every problem this error stands for (here: itself alone)."""
        return (self,)

    def within(self, section):
        """The same error, for a key that lives under ``section``.

        Drivers only see their own section (``storage.<name>``), so they name
        keys relative to it; this makes the path absolute.
        """
        if self.key is not None:
            if self.key == section or self.key.startswith(section + "."):
                return self
            return ConfigError(f"{section}.{self.key}", self.problem)
        message = str(self.problem)
        if message == section or message.startswith((section + ".", section + ":")):
            return self
        if re.match(r"[\w.\-]+: ", message):
            return ConfigError(f"{section}.{message}")
        return ConfigError(section, message)

    @classmethod
    def of(cls, errors):
        """One exception for ``errors`` (at least one), in the order given:
        the error itself when there is one, else a :class:`ConfigErrors`."""
        errors = [single for error in errors for single in error.errors]
        if len(errors) == 1:
            return errors[0]
        return ConfigErrors(errors)


class ConfigErrors(ConfigError):
    """Several problems of one file, reported together.

    ``str()`` is one line per problem, in document order, at most
    ``MAX_REPORTED`` of them (a file of garbage must not flood a terminal);
    ``key`` and ``problem`` are the first one's, so code that reports a
    single ConfigError still names the first problem of the file.
    """

    MAX_REPORTED = 20

    def __init__(self, errors):
        self._errors = tuple(single for error in errors for single in error.errors)
        first = self._errors[0]
        super().__init__(first.key, first.problem)

    def __str__(self):
        lines = [str(error) for error in self._errors[: self.MAX_REPORTED]]
        if len(self._errors) > self.MAX_REPORTED:
            lines.append(f"... and {len(self._errors) - self.MAX_REPORTED} more problems")
        return "\n".join(lines)

    @property
    def errors(self):
        return self._errors

    def within(self, section):
        return ConfigErrors([error.within(section) for error in self._errors])


def error_lines(error):
    """The lines of ``str(error)`` for a :class:`ConfigError` (one per problem)."""
    return str(error).splitlines() or [str(error)]


def describe(value):
    """A short, unambiguous rendering of a bad value for an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def join(path, key):
    """The dotted path of ``key`` inside ``path`` (the top level is "").

    A key that is not printable text (a newline, a control character) is
    quoted with ``repr``, so that every error stays one line naming the key
    as it can be found in the file.
    """
    text = str(key)
    if not text.isprintable():
        text = repr(text)
    return f"{path}.{text}" if path else text
