"""Worker mode (registryd.runtime.workers) with the real ``twistd registryd``.

Several processes share the listening socket and one storage root: each
serves connections, an upload continues in whichever process a request
reaches, a worker that dies is started again, notification events built in
workers reach the main process's endpoint, and stopping the main process
stops them all.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from tests.e2e.tools import SSH, free_port, free_ports
from tests.integration.test_twistd import Running, write_config


def workers_of(running):
    found = []
    for child in psutil.Process(running.process.pid).children():
        try:
            if "registryd.runtime.workers" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited (a zombie until reaped)
            pass
    return found


def wait_for(condition, timeout=30, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {message}")


def established(process, port):
    return sum(
        1
        for connection in process.net_connections("tcp")
        if connection.status == "ESTABLISHED" and connection.laddr.port == port
    )


def request(port, method, path, body=b"", headers=None, connection=None):
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    if own:
        connection.close()
    return response, data


def connections_to_both(running, port):
    """Open connections (each answered once) until both the main process
    and its worker hold some: the kernel spreads them over the processes."""
    worker = wait_for(lambda: workers_of(running), message="a worker process")[0]
    main = psutil.Process(running.process.pid)
    connections = []

    def both_serve():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        response, _ = request(port, "GET", "/v2/", connection=connection)
        assert response.status == 200
        connections.append(connection)
        return established(main, port) and established(worker, port)

    wait_for(both_serve, timeout=60, message="connections served by both processes")
    return connections


class EventSink:
    """A notification endpoint: collects the events registryd posts."""

    def __init__(self):
        self.events = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.events.extend(json.loads(body)["events"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink():
    events = EventSink()
    yield events
    events.close()


def blob_gets_counted(debug_port):
    """registryd_http_requests_total for blob GETs answered 200, from the
    main process's /metrics (summed over the processes)."""
    from prometheus_client.parser import text_string_to_metric_families

    response, body = request(debug_port, "GET", "/metrics")
    assert response.status == 200
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if (
                sample.name == "registryd_http_requests_total"
                and sample.labels.get("route") == "blob"
                and sample.labels.get("method") == "GET"
                and sample.labels.get("status") == "200"
            ):
                assert "pid" not in sample.labels
                total += sample.value
    return total


def test_workers_share_the_socket_storage_and_notifications(tmp_path, sink):
    port, debug_port = free_ports(2)
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {tmp_path / "store"}
http:
  addr: 127.0.0.1:{port}
  debug:
    addr: 127.0.0.1:{debug_port}
    prometheus:
      enabled: true
notifications:
  endpoints:
    - name: sink
      url: {sink.url}
      timeout: 2s
      threshold: 3
      backoff: 1s
  journal:
    directory: {tmp_path / "journal"}
workers: 2
""",
    )
    with Running(tmp_path, "--config", config) as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        worker = wait_for(lambda: workers_of(running), message="a worker process")[0]
        connections = connections_to_both(running, port)

        # A chunked upload, one connection per request: the chunks land in
        # either process, and the upload continues from storage.
        data = os.urandom(3 * 1024 * 1024 + 11)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response, _ = request(port, "POST", "/v2/work/app/blobs/uploads/")
        location = response.getheader("Location").split(f":{port}", 1)[1]
        chunk = 256 * 1024
        for offset in range(0, len(data), chunk):
            piece = data[offset : offset + chunk]
            response, body = request(
                port,
                "PATCH",
                location,
                piece,
                {
                    "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                    "Content-Type": "application/octet-stream",
                },
            )
            assert response.status == 202, body
            location = response.getheader("Location").split(f":{port}", 1)[1]
        response, body = request(port, "PUT", f"{location}?digest={digest}")
        assert response.status == 201, body
        for _ in range(10):  # pulls on fresh connections
            response, pulled = request(port, "GET", f"/v2/work/app/blobs/{digest}")
            assert response.status == 200 and pulled == data
        # and on the connections each process holds: /metrics counts them
        # all, whichever process served them
        for connection in connections:
            response, pulled = request(
                port, "GET", f"/v2/work/app/blobs/{digest}", connection=connection
            )
            assert response.status == 200 and pulled == data
            connection.close()
        pulls = 10 + len(connections)
        wait_for(lambda: blob_gets_counted(debug_port) == pulls, message=f"{pulls} pulls counted")

        # Every pull was notified, whichever process served it.
        def pulls_notified():
            pulled = [e for e in sink.events if e["action"] == "pull"]
            return len(pulled) >= pulls

        wait_for(pulls_notified, message="every pull notified")
        assert len({e["id"] for e in sink.events}) == len(sink.events)

        # A reload (SIGHUP to the main process, passed on to the workers)
        # keeps the workers' events flowing.
        running.process.send_signal(signal.SIGHUP)
        wait_for(lambda: running.output.count("reload: configuration") >= 2, message="both reloads")
        for _ in range(6):
            response, _ = request(port, "GET", f"/v2/work/app/blobs/{digest}")
            assert response.status == 200
        wait_for(
            lambda: len([e for e in sink.events if e["action"] == "pull"]) >= pulls + 6,
            message="6 more pull events",
        )
        wait_for(lambda: blob_gets_counted(debug_port) == pulls + 6, message="6 more counted")

        # A worker that dies is started again; what it counted still counts.
        worker.kill()
        replacement = wait_for(
            lambda: [w for w in workers_of(running) if w.pid != worker.pid],
            message="a new worker",
        )[0]
        wait_for(lambda: request(port, "GET", "/v2/")[0].status == 200, message="serving")
        assert blob_gets_counted(debug_port) == pulls + 6
        metrics_directory = replacement.environ()["PROMETHEUS_MULTIPROC_DIR"]
        assert os.path.isdir(metrics_directory)

        status = running.stop()
    assert status in (0, -signal.SIGTERM), running.output
    assert not replacement.is_running() or replacement.status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(metrics_directory)  # removed when the main process stops
    assert "Traceback" not in running.output, running.output


def uploads_in_progress(debug_port):
    """registryd_uploads_in_progress, summed over the processes."""
    from prometheus_client.parser import text_string_to_metric_families

    response, body = request(debug_port, "GET", "/metrics")
    assert response.status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "registryd_uploads_in_progress"
    )


def connection_to(worker, main, port, attempts=200):
    """A socket connected to ``port`` that ``worker`` accepted (the kernel
    gives each new connection to one of the processes sharing the socket:
    open connections until one lands there)."""
    others = []
    try:
        for _ in range(attempts):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            local = sock.getsockname()[1]

            def accepted_by(local=local):
                for process in (worker, main):
                    for connection in process.net_connections("tcp"):
                        if connection.raddr and connection.raddr.port == local:
                            return process
                return None

            if wait_for(accepted_by, message="the connection accepted").pid == worker.pid:
                return sock
            others.append(sock)
        pytest.fail(f"no connection of {attempts} reached the worker {worker.pid}")
    finally:
        for other in others:
            other.close()


def two_process_config(tmp_path):
    """``(port, storage root, configuration file)`` of a registry of two
    processes without an access log."""
    port = free_port()
    store = tmp_path / "store"
    config = write_config(
        tmp_path,
        f"version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {store}\nhttp:\n  addr: 127.0.0.1:{port}\nworkers: 2\n",
    )
    return port, store, config


def connection_to_each(main, worker, port):
    """``{pid: HTTPConnection}``: a connection that each process accepted."""
    connections = {}
    for process, other in ((main, worker), (worker, main)):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.sock = connection_to(process, other, port)
        connections[process.pid] = connection
    return connections


def draining_workers_config(tmp_path):
    """(port, debug port, configuration path): two processes, a debug
    listener with metrics and ``http.draintimeout`` of 20 s."""
    from tests.integration.test_twistd_operations import draining_config

    port, debug_port = free_ports(2)
    config = draining_config(
        tmp_path,
        port,
        http=f"  debug:\n    addr: 127.0.0.1:{debug_port}\n    prometheus: {{enabled: true}}\n",
        more="workers: 2\n",
    )
    return port, debug_port, config


def upload_in_progress_on_the_worker(running, port, debug_port):
    """A PATCH the worker process is receiving, a third of its body sent:
    (the worker, its socket, the whole body).  While it lasts, a draining
    worker cannot finish stopping."""
    running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
    worker = wait_for(lambda: workers_of(running), message="a worker process")[0]
    wait_for(lambda: request(port, "GET", "/v2/")[0].status == 200, message="serving")
    response, _ = request(port, "POST", "/v2/drain/app/blobs/uploads/")
    assert response.status == 202
    location = response.getheader("Location")

    busy = connection_to(worker, psutil.Process(running.process.pid), port)
    data = os.urandom(300_000)
    busy.sendall(
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data[:100_000]
    )
    wait_for(
        lambda: uploads_in_progress(debug_port) == 1, message="the worker receiving the upload"
    )
    return worker, busy, data


def finish_upload_in_progress(busy, data):
    """Send the rest of :func:`upload_in_progress_on_the_worker`'s body: the
    worker answers it (closing the connection: it is stopping)."""
    from tests.support import read_response_head

    busy.sendall(data[100_000:])
    status, headers, _ = read_response_head(busy)
    assert status == 202, status
    assert headers["range"] == f"0-{len(data) - 1}"
    assert headers.get("connection") == "close"
    busy.close()


def test_a_worker_lets_its_upload_in_progress_finish_on_stop(tmp_path):
    """http.draintimeout in worker mode: on SIGTERM a worker process, too,
    stops accepting and lets the request it is serving finish."""
    port, debug_port, config = draining_workers_config(tmp_path)
    with Running(tmp_path, "--config", config) as running:
        _, busy, data = upload_in_progress_on_the_worker(running, port, debug_port)
        running.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "letting requests finish" in running.output, message="draining")
        finish_upload_in_progress(busy, data)
        assert running.process.wait(timeout=60) in (0, -signal.SIGTERM), running.output
    assert "Traceback" not in running.output, running.output


def test_a_worker_told_to_stop_twice_stops_once_without_a_traceback(tmp_path):
    """A worker gets ``SIGTERM`` twice when the whole process group is
    signalled (systemd's ``KillMode=control-group``, Ctrl-C, ``timeout``):
    once directly, once forwarded by the main process.  Twisted's handler
    called ``reactor.stop()`` again and logged ``ReactorNotRunning`` with a
    traceback.  The upload in progress keeps the worker stopping between
    the two signals, so the second always finds it stopping."""
    port, debug_port, config = draining_workers_config(tmp_path)
    with Running(tmp_path, "--config", config) as running:
        worker, busy, data = upload_in_progress_on_the_worker(running, port, debug_port)
        os.kill(worker.pid, signal.SIGTERM)  # the group's signal, reaching the worker first
        wait_for(lambda: "letting requests finish" in running.output, message="worker draining")
        running.process.send_signal(signal.SIGTERM)  # the main process forwards it
        wait_for(
            lambda: running.output.lower().count("sigterm") >= 3,
            message="the worker's second SIGTERM (and the main process's)",
        )
        finish_upload_in_progress(busy, data)
        assert running.process.wait(timeout=60) in (0, -signal.SIGTERM), running.output
    assert "ReactorNotRunning" not in running.output, running.output
    assert "Traceback" not in running.output, running.output


def test_workers_option_replaces_the_configuration_and_is_checked(tmp_path):
    from tests.integration.test_twistd import assert_clean_failure, run_to_exit

    status, output = run_to_exit(tmp_path, "--workers", "0", "--listen", "tcp:0")
    assert_clean_failure(status, output, "--workers")


def test_read_only_switched_from_the_manhole_reaches_every_worker(tmp_path):
    """readonly(True) in the main process's manhole: writes are refused by
    every process, also by a worker started afterwards; readonly(False)
    lets them through again everywhere."""
    port, ssh_port = free_ports(2)
    ssh = SSH(ssh_port, tmp_path)
    key = ssh.new_key("admin")
    (tmp_path / "authorized_keys").write_bytes((tmp_path / "admin.pub").read_bytes())
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
log:
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {tmp_path / "store"}
http:
  addr: 127.0.0.1:{port}
manhole:
  listen: tcp:{ssh_port}:interface=127.0.0.1
  authorized_keys: {tmp_path / "authorized_keys"}
  host_key: {tmp_path / "host_key"}
workers: 2
""",
    )

    def statuses_of_both_processes(worker):
        """POST an upload on each of connections held open until both
        processes have one; the set of statuses."""
        main = psutil.Process(running.process.pid)
        connections = []

        def one_more_connection():
            connections.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
            assert request(port, "GET", "/v2/", connection=connections[-1])[0].status == 200
            return established(main, port) and established(worker, port)

        wait_for(one_more_connection, timeout=60, message="connections in both processes")
        found = set()
        for connection in connections:
            response, _ = request(port, "POST", "/v2/ro/app/blobs/uploads/", connection=connection)
            found.add(response.status)
            connection.close()
        return found

    def manhole(source):
        result = ssh.run(key, source)
        assert result.returncode == 0, result
        return result.stdout.decode().strip()

    with Running(tmp_path, "--config", config) as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        worker = wait_for(lambda: workers_of(running), message="a worker process")[0]
        assert statuses_of_both_processes(worker) == {202}

        # Each process logs the switch: the main process, then the worker.
        assert manhole("readonly(True)") == "True"
        wait_for(lambda: running.output.count("read-only mode on") == 2, message="both told")
        assert statuses_of_both_processes(worker) == {405}

        worker.kill()  # its replacement starts read-only too
        replacement = wait_for(
            lambda: [w for w in workers_of(running) if w.pid != worker.pid],
            message="a new worker",
        )[0]
        wait_for(lambda: running.output.count("read-only mode on") == 3, message="new one told")
        assert statuses_of_both_processes(replacement) == {405}

        assert manhole("readonly(False)") == "False"
        wait_for(lambda: running.output.count("read-only mode off") == 2, message="both told")
        assert statuses_of_both_processes(replacement) == {202}
        status = running.stop()
    assert status in (0, -signal.SIGTERM), running.output
    assert "Traceback" not in running.output, running.output


def test_a_tag_pushed_through_one_process_is_pulled_fresh_through_the_other(tmp_path):
    """Each process keeps what tags resolved to (registryd.storage.cache.LinkCache);
    a tag re-pointed through one process is served as it is now by the
    other, which had the old target cached."""
    port, store, config = two_process_config(tmp_path)
    media_type = "application/vnd.oci.image.manifest.v1+json"

    def manifest(layer):
        blobs = []
        for content in (b'{"architecture":"amd64","os":"linux"}', layer):
            digest = "sha256:" + hashlib.sha256(content).hexdigest()
            response, _ = request(port, "POST", f"/v2/app/blobs/uploads/?digest={digest}", content)
            assert response.status == 201
            blobs.append(
                {"mediaType": "application/octet-stream", "digest": digest, "size": len(content)}
            )
        return json.dumps(
            {"schemaVersion": 2, "mediaType": media_type, "config": blobs[0], "layers": blobs[1:]}
        ).encode()

    link = store / "docker/registry/v2/repositories/app/_manifests/tags/latest/current/link"
    with Running(tmp_path, "--config", config) as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        worker = wait_for(lambda: workers_of(running), message="a worker process")[0]
        main = psutil.Process(running.process.pid)
        bodies = [manifest(os.urandom(100)), manifest(os.urandom(100))]
        by_process = connection_to_each(main, worker, port)

        def pull(process):
            response, _ = request(
                port,
                "GET",
                "/v2/app/manifests/latest",
                headers={"Accept": media_type},
                connection=by_process[process.pid],
            )
            return response.status, response.getheader("Docker-Content-Digest")

        for age, (pusher, puller) in enumerate([(main, worker), (worker, main), (main, worker)]):
            body = bodies[age % 2]
            response, _ = request(
                port,
                "PUT",
                "/v2/app/manifests/latest",
                body,
                {"Content-Type": media_type},
                connection=by_process[pusher.pid],
            )
            assert response.status == 201
            # Aged past the cache's settled time: both processes keep it.
            os.utime(link, (0, time.time() - 60 - age))
            expected = (200, "sha256:" + hashlib.sha256(body).hexdigest())
            assert pull(puller) == expected and pull(pusher) == expected
            assert pull(puller) == expected  # from its cache
        for connection in by_process.values():
            connection.close()
    assert "Traceback" not in running.output, running.output


def test_an_upload_received_by_one_process_is_completed_by_the_other_without_reading_it_back(
    tmp_path,
):
    """``docker push``, podman and skopeo send a layer's ``PATCH`` on one
    pooled connection and its ``PUT`` on whichever is free, often one that
    the other process accepted.  That process finishes the upload from the
    running hash the ``PATCH`` stored beside it, instead of reading the
    whole upload back and hashing it again (what made two processes cost
    more per push than one)."""
    port, store, config = two_process_config(tmp_path)
    data = os.urandom(8 * 1024 * 1024 + 5)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with Running(tmp_path, "--config", config) as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        worker = wait_for(lambda: workers_of(running), message="a worker process")[0]
        main = psutil.Process(running.process.pid)
        connections = connection_to_each(main, worker, port)
        response, _ = request(
            port, "POST", "/v2/app/blobs/uploads/", connection=connections[main.pid]
        )
        location = response.getheader("Location").split(f":{port}", 1)[1]
        response, body = request(
            port,
            "PATCH",
            location,
            data,
            {"Content-Type": "application/octet-stream"},
            connection=connections[main.pid],
        )
        assert response.status == 202, body
        read_before = worker.io_counters().read_chars
        response, body = request(
            port, "PUT", f"{location}?digest={digest}", connection=connections[worker.pid]
        )
        assert response.status == 201, body
        read_by_worker = worker.io_counters().read_chars - read_before
        for connection in connections.values():
            connection.close()
    assert read_by_worker < 64 * 1024, f"the worker read {read_by_worker} bytes to finish"
