"""One docstring markup across registryd/: reST (``literal``, :class:`X`,
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
PACKAGE = os.path.join(ROOT, "registryd")

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


def test_registryd_docstrings_use_rest_only():
    offenders = []
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as stream:
                    source = stream.read()
                relative = os.path.relpath(path, ROOT)
                offenders.extend(
                    f"{relative}:{line}: {marker}" for line, marker in epytext_markers(source)
                )
    assert offenders == [], "epytext markup (use reST):\n" + "\n".join(offenders)
