"""registryd's twisted.web Request: what it does as twisted.web does, cheaper."""

import email.utils
import time

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.web import resource, server

from registryd.http.web import StreamingSite


class Where(resource.Resource):
    """Answers where twisted.web's traversal put the request."""

    isLeaf = True

    def render(self, request):
        return repr((request.prepath, request.postpath, request.sitepath)).encode()


def answer(site, data):
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return transport.value()


@pytest.mark.parametrize(
    "path",
    [b"/", b"/v2/", b"/v2/a/b/blobs/sha256:00", b"/v2/a%2Fb/%7e/x%", b"//a//", b"/%zz/%41", b"*"],
)
def test_process_answers_as_twisted_web(path):
    """Same status, headers (Date aside) and traversal as
    ``twisted.web.server.Request.process``, ``*`` and escapes included."""
    ours = StreamingSite(Where(), reactor=task.Clock())
    theirs = server.Site(Where(), reactor=task.Clock())
    data = b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n"

    def without_date(response):
        return [line for line in response.split(b"\r\n") if not line.startswith(b"Date: ")]

    ours_said, theirs_said = answer(ours, data), answer(theirs, data)
    assert without_date(ours_said) == without_date(theirs_said)
    assert b"\r\nServer: TwistedWeb/" in ours_said


def test_the_date_header_is_the_current_second():
    site = StreamingSite(Where(), reactor=task.Clock())
    before = int(time.time())
    said = answer(site, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    after = int(time.time())
    [date] = [line[6:] for line in said.split(b"\r\n") if line.startswith(b"Date: ")]
    sent = email.utils.parsedate_to_datetime(date.decode()).timestamp()
    assert before <= sent <= after


def test_the_date_is_formatted_once_a_second(monkeypatch):
    site = StreamingSite(Where(), reactor=task.Clock())
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.2)
    first = site.http_date()
    assert first == b"Sun, 09 Sep 2001 01:46:40 GMT"
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.9)
    assert site.http_date() is first
    monkeypatch.setattr(time, "time", lambda: 1_000_000_001.0)
    assert site.http_date() == b"Sun, 09 Sep 2001 01:46:41 GMT"
