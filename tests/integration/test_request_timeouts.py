"""The helpers hypothesis tests make their requests with fail, naming the
request, when a server never answers: a hung example must end the test
with a message, not stall the suite until a CI job's limit."""

import pytest
import pytest_twisted

from tests.support import exchange, in_reactor, make_client, raw_request_bytes, run_examples


@pytest_twisted.ensureDeferred
async def test_a_request_a_server_never_answers_fails_naming_it():
    """A server that accepts connections and reads requests but never
    says a word: the treq request through :func:`in_reactor` and the raw
    one through :func:`exchange` each raise TimeoutError naming what was
    asked, once their timeout has passed."""
    from twisted.internet import protocol, reactor

    port = reactor.listenTCP(
        0, protocol.Factory.forProtocol(protocol.Protocol), interface="127.0.0.1"
    )
    number = port.getHost().port
    client, pool = make_client(reactor)

    async def get(url):
        response = await client.get(url)
        return response.code

    def ask():
        with pytest.raises(TimeoutError, match=r"get\('http://127.0.0.1:\d+/v2/'\) did not finish"):
            in_reactor(get, f"http://127.0.0.1:{number}/v2/", timeout=0.5)
        with pytest.raises(TimeoutError, match=r"did not answer b'GET /v2/ HTTP/1.1' within 0.5 s"):
            exchange(number, raw_request_bytes(number, "GET", "/v2/"), timeout=0.5)

    try:
        await run_examples(ask)
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()
