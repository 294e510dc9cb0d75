"""The manhole's pure parts: keys, the command runner, the namespace."""

import os
import stat

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.conch.ssh import keys
from twisted.internet import defer, threads
from twisted.internet.task import deferLater

from registryd.config import Config, ConfigError
from registryd.ops.maintenance import Maintenance
from registryd.ops.manhole import (
    HELP,
    load_authorized_keys,
    load_or_create_host_key,
    make_namespace,
    run_source,
)
from registryd.ops.statements import StatementRunner, call_on_reactor
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.registry import Registry
from tests.support import in_reactor, run_examples


def new_key():
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def test_host_key_is_generated_once_with_private_permissions(tmp_path):
    path = tmp_path / "sub" / "host_key"
    key = load_or_create_host_key(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    again = load_or_create_host_key(str(path))
    assert again == key and not again.isPublic()
    assert again.sshType() == b"ssh-ed25519"


def test_a_public_or_broken_host_key_is_refused(tmp_path):
    public = tmp_path / "public"
    public.write_bytes(new_key().public().toString("OPENSSH"))
    with pytest.raises(ConfigError) as info:
        load_or_create_host_key(str(public))
    assert str(info.value).startswith("manhole.host_key: ") and "public key" in str(info.value)
    broken = tmp_path / "broken"
    broken.write_bytes(b"not a key")
    with pytest.raises(ConfigError) as info:
        load_or_create_host_key(str(broken))
    assert str(info.value).startswith("manhole.host_key: cannot load host key")


def test_authorized_keys(tmp_path):
    first, second = new_key(), new_key()
    path = tmp_path / "authorized_keys"
    path.write_bytes(
        b"# admins\n\n"
        + first.public().toString("OPENSSH")
        + b" alice@example\n"
        + b"garbage line\n"
        + second.public().toString("OPENSSH")
        + b"\n"
    )
    assert load_authorized_keys(str(path)) == [first.public(), second.public()]
    with pytest.raises(ConfigError) as info:
        load_authorized_keys(str(tmp_path / "missing"))
    assert str(info.value).startswith("manhole.authorized_keys: cannot read")
    (tmp_path / "empty").write_bytes(b"# nobody\n")
    with pytest.raises(ConfigError) as info:
        load_authorized_keys(str(tmp_path / "empty"))
    assert "holds no public key" in str(info.value)


def in_statement_thread(function, *args, **kwargs):
    """Call a helper where the manhole calls it: off the reactor thread."""
    return threads.deferToThread(function, *args, **kwargs)


async def call_helper(helper, arguments):
    """For :func:`tests.support.in_reactor` (which passes positional
    arguments only): ``helper(*arguments)``, or ``helper(**arguments)``
    for a dict, in a statement thread."""
    if isinstance(arguments, dict):
        return await in_statement_thread(helper, **arguments)
    return await in_statement_thread(helper, *arguments)


@pytest_twisted.ensureDeferred
async def test_run_source_prints_values_awaits_deferreds_and_reports_errors():
    runner = StatementRunner()
    namespace = {"later": lambda: defer.succeed({"a": 1})}
    assert await run_source("1 + 1", namespace, runner) == ("2\n", "", 0)
    assert await run_source("later()", namespace, runner) == ("{'a': 1}\n", "", 0)
    assert await run_source("x = 5\nprint(x * 2)", namespace, runner) == ("10\n", "", 0)
    assert namespace["x"] == 5
    assert await run_source("'text'", namespace, runner) == ("text\n", "", 0)
    assert await run_source("None", namespace, runner) == ("", "", 0)
    out, err, status = await run_source("print('before'); 1/0", namespace, runner)
    assert (out, err, status) == ("before\n", "ZeroDivisionError: division by zero\n", 1)
    out, err, status = await run_source("def (", namespace, runner)
    assert status == 1 and err.startswith("SyntaxError: ") and err.count("\n") == 1
    # An error's own __str__ runs in the statement's thread, under the watchdog.
    out, err, status = await run_source(
        "class Odd(Exception):\n  def __str__(self):\n    while True: pass\nraise Odd()",
        namespace,
        StatementRunner(time_limit=0.5),
    )
    assert (status, err) == (1, "Odd\n")
    out, err, status = await run_source(
        "raise ValueError('a' * 10**6 + '\\nmore')", namespace, runner
    )
    assert (status, err) == (1, "ValueError: " + "a" * 500 + "\n")


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX = (
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
)


@pytest_twisted.ensureDeferred
async def test_namespace_helpers():
    registry = Registry(InMemoryDriver())
    namespace = make_namespace(registry, Maintenance(registry, Config()), Config())
    assert namespace["registry"] is registry and namespace["config"] == Config()
    assert await in_statement_thread(namespace["repos"]) == []
    assert await in_statement_thread(namespace["readonly"]) is False
    assert await in_statement_thread(namespace["readonly"], True) is True and registry.read_only
    assert await in_statement_thread(namespace["readonly"]) is True
    await in_statement_thread(namespace["readonly"], False)
    stats = await in_statement_thread(namespace["stats"])
    assert stats["repositories"] == 0 and stats["blobs"] == 0 and stats["read_only"] is False
    report = await in_statement_thread(namespace["gc"])
    assert report.dry_run  # the manhole's gc() is a dry run unless told otherwise
    purge = await in_statement_thread(namespace["purge_uploads"], older_than="1h")
    assert purge.older_than == 3600.0 and not purge.dry_run
    assert await in_statement_thread(namespace["uploads"]) == []
    rebuilt = await in_statement_thread(namespace["rebuild_referrers"])
    assert rebuilt.repositories == 0 and not rebuilt.dry_run
    await registry.repository("team/app").manifests.put("v1", INDEX, OCI_INDEX)
    assert await in_statement_thread(namespace["repos"]) == ["team/app"]
    removed = await in_statement_thread(namespace["delete_repository"], "team/app")
    assert removed["tags"] == ["v1"] and len(removed["manifests"]) == 1 and removed["kept"] == []
    assert await in_statement_thread(namespace["repos"]) == []
    assert await in_statement_thread(namespace["retention"]) == (
        "retention (dry run): 0 repositories, would delete 0 tags and 0 manifests"
    )
    assert (await in_statement_thread(namespace["retention"], json=True))["dry_run"] is True
    assert await in_statement_thread(namespace["usage"]) == {"quotas": []}
    runner = StatementRunner()
    out, _, status = await run_source("help_registryd()", namespace, runner)
    assert status == 0 and out == HELP
    out, _, status = await run_source("exit()", namespace, runner)
    assert status == 0 and out.startswith("Use Ctrl-D (^D) to leave")
    assert (await run_source("raise SystemExit(3)", namespace, runner))[2] == 3
    with pytest.raises(ConfigError):
        await in_statement_thread(namespace["purge_uploads"], older_than="soon")
    # On the reactor thread a helper could only wait for ever: it refuses at once.
    with pytest.raises(RuntimeError, match=r"^repos\(\) waits for the reactor"):
        namespace["repos"]()


@pytest_twisted.ensureDeferred
async def test_helper_results_are_plain_values_that_sort_count_iterate_and_index():
    """The freeze of issue 10: helpers returned Deferreds, and iterating an
    unfired Deferred yields itself for ever (on the reactor thread, so it
    never fires).  Now each is a value or fails at once in one line."""
    registry = Registry(InMemoryDriver())
    namespace = make_namespace(registry, Maintenance(registry, Config()), Config())
    runner = StatementRunner(time_limit=10)
    for helper in ("repos()", "uploads()", "stats()", "readonly()"):
        for use in ("sorted({})", "len({})", "[x for x in {}]", "{}[0]", "list({})"):
            out, err, status = await run_source(use.format(helper), namespace, runner)
            assert (status == 0 and not err) or (status == 1 and err.count("\n") == 1), (
                use,
                helper,
                err,
            )
    assert await run_source('stats()["read_only"]', namespace, runner) == ("False\n", "", 0)
    assert await run_source("sorted(repos())", namespace, runner) == ("[]\n", "", 0)
    out, err, status = await run_source("len(gc())", namespace, runner)
    assert (status, err) == (1, "TypeError: object of type 'GCReport' has no len()\n")


@pytest_twisted.ensureDeferred
async def test_a_runaway_statement_is_stopped_and_the_reactor_keeps_turning():
    from twisted.internet import reactor, task

    runner = StatementRunner(time_limit=0.5)
    ticks = []
    ticker = task.LoopingCall(lambda: ticks.append(1))
    ticker.start(0.01)
    try:
        out, err, status = await run_source(
            "try:\n  while True: pass\nexcept Exception: pass", {}, runner
        )
    finally:
        ticker.stop()
    assert (
        status == 1
        and err == "TimeLimitExceeded: stopped after computing for 0.5s (manhole.timelimit)\n"
    )
    assert len(ticks) > 5  # the reactor ran meanwhile
    assert not runner.running and reactor.running


@pytest_twisted.ensureDeferred
async def test_a_statement_blocked_outside_python_is_left_behind():
    """A long sleep (or read) does not see the stop until it returns; it
    holds up nothing but its session, which gets its prompt back."""
    from registryd.ops import statements

    runner = StatementRunner(time_limit=0.2)
    started = runner.clock()
    out, err, status = await run_source("import time; time.sleep(60)", {}, runner)
    assert (status, err) == (
        1,
        (
            "TimeLimitExceeded: stopped after computing for 0.2s (manhole.timelimit);"
            " it goes on in the background\n"
        ),
    )
    assert runner.clock() - started < 0.2 + statements.ABANDON_AFTER + 30  # not 60 s
    assert not runner.running


@pytest_twisted.ensureDeferred
async def test_waiting_for_a_helper_does_not_count_against_the_time_limit():
    from twisted.internet import reactor, task

    runner = StatementRunner(time_limit=0.3)
    namespace = {
        "slow": lambda: call_on_reactor(reactor, task.deferLater, reactor, 1.0, lambda: "done")
    }
    assert await run_source("slow()", namespace, runner) == ("done\n", "", 0)


@pytest_twisted.ensureDeferred
async def test_a_statement_growing_the_daemon_is_stopped():
    runner = StatementRunner(time_limit=60, memory_limit=64 * 1024 * 1024)
    out, err, status = await run_source("x = []\nwhile True: x.append(b'x' * 100000)", {}, runner)
    assert status == 1 and err.startswith(
        "MemoryLimitExceeded: stopped: the daemon grew by more than"
    )
    # One allocation in C that the watchdog cannot interrupt meets the address-space cap.
    out, err, status = await run_source("len('x' * 10**10)", {}, runner)
    assert (status, err) == (1, "MemoryError\n")
    assert await run_source("len('x' * 10**6)", {}, runner) == ("1000000\n", "", 0)


@pytest_twisted.ensureDeferred
async def test_interrupting_a_statement_raises_keyboard_interrupt_there():
    from twisted.internet import reactor

    runner = StatementRunner(time_limit=60)
    out = []
    statement = runner.run(lambda: exec("print('started')\nwhile True: pass"), out.append)
    while not out:
        await deferLater(reactor, 0.01)
    runner.interrupt(statement)
    error = await statement.done
    assert isinstance(error, KeyboardInterrupt) and out == ["started", "\n"]


@pytest_twisted.ensureDeferred
async def test_a_traced_thread_runs_on_after_statements_end():
    """A statement's end cleared "its" pending stop with
    ``PyThreadState_SetAsyncExc(ident, NULL)``, which on CPython 3.11 left
    the interpreter's asynchronous-exception signal set for good: from
    then on any thread running under ``sys.settrace`` (a debugger,
    coverage, hypothesis explaining a failing example) spun at its next
    function entry for ever.  Each kind of end is tried: returned,
    failed, stopped by the time limit."""
    import sys
    import threading

    from tests.service_support import wait_for

    for source in ["1 + 1", "undefined_name", "while True: pass"]:
        out, err, status = await run_source(source, {}, StatementRunner(time_limit=0.5))
        assert status == (0 if source == "1 + 1" else 1), (source, err)

    def traced():
        sys.settrace(lambda frame, event, arg: None)
        try:
            sum(abs(n) for n in range(100))  # a call: a function entry, traced
        finally:
            sys.settrace(None)

    # A daemon thread, not the reactor's pool: one that spins must not
    # keep the test process from exiting.
    thread = threading.Thread(target=traced, daemon=True)
    thread.start()
    await wait_for(lambda: not thread.is_alive(), timeout=60)


@pytest_twisted.ensureDeferred
async def test_any_command_text_gives_output_or_one_line_error():
    """Examples run in a thread (:func:`tests.support.run_examples`), each
    waiting for the reactor with a time limit (:func:`tests.support.in_reactor`):
    a statement that never ends fails its example, named, instead of
    hanging the test as awaiting it on the reactor's greenlet would."""

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(source=st.text(max_size=40))
    def check(source):
        out, err, status = in_reactor(run_source, source, {}, StatementRunner(time_limit=1))
        assert (status == 0 and err == "") or err.count("\n") == 1, (source, err)

    await run_examples(check)


def test_twistd_options_refuse_a_bad_manhole_before_starting(tmp_path):
    from twisted.python import usage

    from registryd.runtime.tap import Options

    keys_path = tmp_path / "authorized_keys"
    config = tmp_path / "registryd.yaml"

    def options(manhole):
        config.write_text("version: 0.1\nstorage:\n  inmemory:\nmanhole:\n" + manhole)
        parsed = Options()
        parsed.check(["--config", str(config)])
        return parsed

    with pytest.raises(usage.UsageError) as info:
        options(f"  authorized_keys: {keys_path}\n")
    assert "manhole.authorized_keys: cannot read" in str(info.value)
    keys_path.write_bytes(new_key().public().toString("OPENSSH") + b"\n")
    with pytest.raises(usage.UsageError) as info:
        options(f"  authorized_keys: {keys_path}\n  listen: 'tcp:notaport'\n")
    assert "manhole.listen 'tcp:notaport'" in str(info.value)
    host_key = tmp_path / "host_key"
    parsed = options(f"  authorized_keys: {keys_path}\n  host_key: {host_key}\n")
    assert parsed.registry_config.manhole.host_key == str(host_key)
    assert host_key.exists()  # generated while checking, before twistd forks


def test_sessions_and_realm_provide_conch_interfaces():
    from twisted.conch.interfaces import IConchUser, ISession
    from twisted.cred.portal import IRealm
    from zope.interface.verify import verifyObject

    from registryd.ops.manhole import ManholeRealm

    realm = ManholeRealm(dict)
    verifyObject(IRealm, realm)
    interface, user, logout = realm.requestAvatar(b"admin", None, IConchUser)
    assert interface is IConchUser and IConchUser.providedBy(user)
    session = user.original.getComponent(ISession)
    verifyObject(ISession, session)
    assert session.namespace_factory is dict


#: What an operator may type as a helper's argument: Python values of
#: every kind, and the words that mean "no" to a person but are true to
#: Python.
ARGUMENTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["false", "no", "off", "0", "", "True", "team/app", "Team/App", "a//b"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
SWITCHES = [
    ("gc", "dry_run"),
    ("gc", "delete_untagged"),
    ("purge_uploads", "dry_run"),
    ("rebuild_referrers", "dry_run"),
    ("retention", "dry_run"),
    ("retention", "json"),
    ("readonly", "on"),
]


@pytest_twisted.ensureDeferred
async def test_a_helper_switch_takes_true_or_false_and_refuses_the_rest_doing_nothing():
    """``readonly("false")`` turned read-only mode on, and ``gc(dry_run=False,
    delete_untagged="no")`` deleted untagged manifests: a switch is read
    only when it is True or False (1 or 0); anything else is a one-line
    TypeError naming it, before the helper does anything."""

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(SWITCHES), ARGUMENTS)
    def check(switch, value):
        registry = Registry(InMemoryDriver())
        namespace = make_namespace(registry, Maintenance(registry, Config()), Config())
        helper, argument = switch
        keyword = {} if helper == "readonly" else {"dry_run": True}
        keyword[argument] = value
        try:
            in_reactor(call_helper, namespace[helper], keyword)
        except TypeError as error:
            assert not (isinstance(value, bool) or (type(value) is int and value in (0, 1)))
            assert str(error).startswith(f"{argument} must be True or False, got ")
            assert "\n" not in str(error)
        else:
            assert value is None or isinstance(value, bool) or value in (0, 1), value
        assert registry.read_only is (helper == "readonly" and value in (True, 1))

    await run_examples(check)


@pytest_twisted.ensureDeferred
async def test_a_helper_given_any_repository_answers_or_refuses_it_in_one_line():
    """A repository argument that is no string is a TypeError naming it; a
    string off the spec's grammar is NAME_INVALID (one the registry lacks,
    NAME_UNKNOWN where the helper needs it); each in one line."""
    from registryd import errors

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["tags", "delete_repository", "usage", "rebuild_referrers"]), ARGUMENTS)
    def check(helper, repo):
        registry = Registry(InMemoryDriver())
        namespace = make_namespace(registry, Maintenance(registry, Config()), Config())
        try:
            in_reactor(call_helper, namespace[helper], (repo,))
        except TypeError as error:
            assert str(error).startswith("repo must be a repository name"), str(error)
            assert not isinstance(repo, str) and "\n" not in str(error)
        except errors.RegistryError as error:  # NAME_INVALID, NAME_UNKNOWN
            assert isinstance(repo, str) and "\n" not in str(error)

    await run_examples(check)
