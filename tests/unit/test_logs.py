"""registryd.runtime.logs: JSON log lines, and when they replace twistd's text."""

import io
import json
import os

from twisted.logger import (
    FileLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
)

from registryd.runtime.logs import JSONLineFormatter, LogFormat, choose_format, journal_is_stdout


def event(**fields):
    base = {
        "log_format": "{method} {path} {status}",
        "log_level": LogLevel.info,
        "log_namespace": "registryd.access",
        "log_time": 1764190800.25,
        "method": "GET",
        "path": "/v2/",
        "status": 200,
        "log_logger": object(),
    }
    base.update(fields)
    return base


def test_json_line_has_message_time_level_namespace_fields_and_event_values():
    line = JSONLineFormatter(fields={"service": "registry"})(event())
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert record["msg"] == "GET /v2/ 200"
    assert record["time"] == "2025-11-26T21:00:00.250Z"
    assert record["level"] == "info"
    assert record["namespace"] == "registryd.access"
    assert record["service"] == "registry"
    assert (record["method"], record["path"], record["status"]) == ("GET", "/v2/", 200)
    assert not any(key.startswith("log_") for key in record)


def test_logstash_style_and_journal_priority_prefix():
    record = json.loads(JSONLineFormatter(style="logstash")(event()))
    assert record["@version"] == "1" and record["message"] == "GET /v2/ 200"
    assert record["@timestamp"] == "2025-11-26T21:00:00.250Z"
    line = JSONLineFormatter(priority_prefix=True)(event(log_level=LogLevel.error))
    assert line.startswith("<3>{")
    json.loads(line[3:])


def test_failures_carry_their_traceback():
    from twisted.python.failure import Failure

    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        failure = Failure()
    record = json.loads(
        JSONLineFormatter()(event(log_failure=failure, log_level=LogLevel.critical))
    )
    assert "ZeroDivisionError" in record["traceback"]
    assert record["level"] == "critical"


def test_formatter_choice():
    assert choose_format("text", {"JOURNAL_STREAM": "1:2"}) == "text"
    assert choose_format("logstash", {}) == "logstash"
    assert choose_format(None, {}) == "text"
    assert choose_format(None, {"JOURNAL_STREAM": "not:numbers"}) == "text"


def test_journal_stream_must_name_stdout_or_stderr(tmp_path):
    info = os.fstat(1)
    assert journal_is_stdout({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}) is True
    other = os.stat(tmp_path)
    assert journal_is_stdout({"JOURNAL_STREAM": f"{other.st_dev}:{other.st_ino}"}) is False
    assert journal_is_stdout({}) is False


def test_log_format_switches_file_observers_and_restores_them():
    publisher = LogPublisher()
    output = io.StringIO()
    observer = FileLogObserver(output, formatEventAsClassicLogText)
    publisher.addObserver(observer)
    log = Logger(namespace="test", observer=publisher)
    log_format = LogFormat("json", {"node": "a"}, publisher=publisher)
    log_format.install()
    log.info("hello {who}", who="world")
    log_format.uninstall()
    log.info("plain again")
    first, second = output.getvalue().splitlines()
    record = json.loads(first)
    assert (record["msg"], record["who"], record["node"]) == ("hello world", "world", "a")
    assert "plain again" in second and not second.startswith("{")


def test_text_format_changes_nothing():
    publisher = LogPublisher()
    observer = FileLogObserver(io.StringIO(), formatEventAsClassicLogText)
    publisher.addObserver(observer)
    LogFormat("text", publisher=publisher).install()
    assert observer.formatEvent is formatEventAsClassicLogText
