"""``twistd registryd --listen``: Twisted endpoint strings as they are,
Distribution's ``http.addr`` syntax translated, anything else one line
showing both syntaxes (the subprocess tests in
tests/integration/test_twistd.py show the line on a real twistd)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registryd.runtime.startup import LISTEN_SYNTAX, StartupError, listen_endpoint
from registryd.runtime.tap import Options


def parsed_listen(*values):
    """What postOptions (registryd.runtime.startup.check) makes of the --listen
    values (it stops at the first problem, as this does)."""
    return [listen_endpoint(value) for value in values]


@pytest.mark.parametrize(
    "given, endpoint",
    [
        ("127.0.0.1:5000", "tcp:5000:interface=127.0.0.1"),
        (":5000", "tcp:5000"),
        ("0.0.0.0:5000", "tcp:5000:interface=0.0.0.0"),
        ("[::1]:5000", "tcp6:5000:interface=\\:\\:1"),
        ("localhost:5000", "tcp:5000:interface=localhost"),
        ("tcp:5000:interface=127.0.0.1", "tcp:5000:interface=127.0.0.1"),
        ("tcp6:5000", "tcp6:5000"),
        ("ssl:5443:privateKey=k.pem", "ssl:5443:privateKey=k.pem"),  # checked with http.tls later
        ("unix:/run/registryd.sock", "unix:/run/registryd.sock"),
    ],
)
def test_distribution_addresses_become_endpoints(given, endpoint):
    assert parsed_listen(given) == [endpoint]


@pytest.mark.parametrize("given", ["5000", "127.0.0.1", "[::1]", "[example]:5000"])
def test_an_address_without_a_usable_port_or_host_shows_the_syntax(given):
    with pytest.raises(StartupError) as info:
        parsed_listen(given)
    assert str(info.value).startswith(f"--listen {given!r}: ")
    assert "\n" not in str(info.value)


def test_the_whole_option_parser_prints_one_line_and_exits_1(capsys):
    with pytest.raises(SystemExit) as info:
        Options().parseOptions(["--listen", "5000"])
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"registryd: --listen '5000': {LISTEN_SYNTAX}\n"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"\[?[0-9a-f:.]{0,20}\]?:[0-9]{0,7}", fullmatch=True))
def test_any_listen_value_is_an_endpoint_or_one_line(value):
    """Hostile --listen values: the result is the value itself (checked as
    an endpoint string later), a tcp/tcp6 endpoint, or one-line usage
    error naming the value; never another exception."""
    try:
        [endpoint] = parsed_listen(value)
    except StartupError as error:
        text = str(error)
        assert text.startswith(f"--listen {value!r}: ") and "\n" not in text.replace(
            repr(value), ""
        )
        return
    assert endpoint == value or endpoint.startswith(("tcp:", "tcp6:"))
