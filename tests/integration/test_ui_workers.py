"""The web interface in worker mode, under the real ``twistd registryd``:
a session made by one process is good in the others (the session key is
made once, in the main process, and passed on to the workers)."""

from http.cookies import SimpleCookie

from tests.e2e.tools import free_port
from tests.integration.test_twistd import Running, write_config
from tests.integration.test_workers import connections_to_both, request


def test_a_session_from_one_process_is_good_in_the_others(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
storage:
  filesystem:
    rootdirectory: {tmp_path / "store"}
http:
  addr: 127.0.0.1:{port}
workers: 2
""",
    )
    with Running(tmp_path, "--config", config) as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        connections = connections_to_both(running, port)
        response, _ = request(port, "GET", "/ui/", connection=connections[0])
        cookie = SimpleCookie(response.getheader("Set-Cookie"))["registryd_session"].value
        for connection in connections:
            # A process that could not read the session would start a new one.
            response, page = request(
                port,
                "GET",
                "/ui/",
                headers={"Cookie": f"registryd_session={cookie}"},
                connection=connection,
            )
            assert response.status == 200 and b"<h1>Repositories</h1>" in page
            assert response.getheader("Set-Cookie") is None
            connection.close()
