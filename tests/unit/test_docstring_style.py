"""One docstring markup across registryd/, tests/ and benchmarks/: reST (``literal``, :class:`X`,
``:param x:`` fields), which most of the code already used when the two
styles were counted.  Epytext markers (``C{x}``, ``L{x}``, ``@param x:``)
in a docstring, string or comment are reported by file and line, so a
module written in the other style, or merged from an older branch, fails
here instead of drifting the code back to two styles.
"""

import io
import os
import re
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the trees whose docstrings, strings and comments are checked
CHECKED = ("registryd", "tests", "benchmarks")
#: this file, whose strings show the epytext it detects
THIS_FILE = os.path.abspath(__file__)

#: Epytext's inline markup (``C{code}``, ``L{link}``, ``I{italic}``,
#: ``B{bold}``) and its fields; the reST equivalents are ``code``,
#: :class:`link` (or :func:, :meth:, ...), *italic*, **bold** and
#: ``:param x:``, ``:raises E:``, ``:returns:``, ``:ivar x:``, ``:rtype:``.
EPYTEXT = re.compile(
    r"\b[CLIB]\{"
    r"|@(?:param|raises?|returns?|ivar|cvar|var|type|rtype|keyword|see|note)\b"
)


def epytext_markers(source):
    """``(line, marker)`` of every epytext marker in the strings and
    comments of ``source``; code is skipped, so a decorator is never one."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT):
            for match in EPYTEXT.finditer(token.string):
                line = token.start[0] + token.string.count("\n", 0, match.start())
                found.append((line, match.group()))
    return found


def test_the_detector_finds_each_epytext_marker_and_no_rest():
    epytext = '''
def f(x):
    """Use C{x}, see L{g}, I{really}, B{now}.

    @param x: a value.
    @raise ValueError: when bad.
    @return: nothing.
    @ivar y: state.
    @rtype: None
    """
    # C{comment}
'''
    assert [marker for _, marker in epytext_markers(epytext)] == [
        "C{",
        "L{",
        "I{",
        "B{",
        "@param",
        "@raise",
        "@return",
        "@ivar",
        "@rtype",
        "C{",
    ]
    assert [line for line, _ in epytext_markers(epytext)] == [3, 3, 3, 3, 5, 6, 7, 8, 9, 11]
    rest = '''
@property
def f(x):
    """Use ``x``, see :class:`g`, *really*, **now**; ``{"a": C}``.

    :param x: a value.
    :raises ValueError: when bad.
    :returns: nothing.
    """
    return {"C": x}
'''
    assert epytext_markers(rest) == []


def python_files():
    """Every ``.py`` file of the ``CHECKED`` trees but this one."""
    for tree in CHECKED:
        for directory, _, files in os.walk(os.path.join(ROOT, tree)):
            for name in sorted(files):
                path = os.path.join(directory, name)
                if name.endswith(".py") and os.path.abspath(path) != THIS_FILE:
                    yield path


def test_the_checked_trees_include_the_tests_and_benchmarks():
    """The tests and benchmarks are checked too (they were left in epytext
    when registryd/ was converted)."""
    relative = {os.path.relpath(path, ROOT) for path in python_files()}
    assert "tests/support.py" in relative and "benchmarks/compare.py" in relative
    assert "tests/unit/test_docstring_style.py" not in relative


def test_docstrings_use_rest_only():
    offenders = []
    for path in python_files():
        with open(path, encoding="utf-8") as stream:
            source = stream.read()
        relative = os.path.relpath(path, ROOT)
        offenders.extend(f"{relative}:{line}: {marker}" for line, marker in epytext_markers(source))
    assert offenders == [], "epytext markup (use reST):\n" + "\n".join(offenders)
