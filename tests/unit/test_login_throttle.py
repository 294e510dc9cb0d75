"""registryd.auth.throttle: exponential delays per (address, user), one
check at a time per pair, bounded memory; and the checker in front of it
(registryd.auth.htpasswd) answering known-good credentials first."""

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer

from registryd import errors
from registryd.auth.htpasswd import HtpasswdChecker, HtpasswdFile
from registryd.auth.throttle import LoginThrottle

# bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4))
ALICE = "alice:$2b$04$NUxVVT7uV0r6qNVArYTTVOtBFSwXKYo4UFFfOPV/pBY9h05006hUS"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def fail(throttle, address, user, key):
    with throttle.attempt(address, user, key):
        throttle.failed(address, user)


def test_delays_grow_exponentially_up_to_the_cap_per_pair():
    clock = Clock()
    throttle = LoginThrottle(free=2, base=1, cap=8, clock=clock)
    fail(throttle, "10.0.0.1", "alice", "g1")
    fail(throttle, "10.0.0.1", "alice", "g2")  # the free ones
    waits = []
    for n in range(6):
        with pytest.raises(errors.TooManyRequests) as info:
            fail(throttle, "10.0.0.1", "alice", f"x{n}")
        waits.append(int(info.value.headers["Retry-After"]))
        assert "too many failed logins" in info.value.message
        clock.now += waits[-1]
        fail(throttle, "10.0.0.1", "alice", f"y{n}")  # allowed once the delay passed
    assert waits == [1, 2, 4, 8, 8, 8]
    with throttle.attempt("10.0.0.2", "alice", "z"):  # another address
        pass
    with throttle.attempt("10.0.0.1", "bob", "z"):  # another user
        pass


def test_a_success_clears_and_quiet_pairs_are_forgotten():
    clock = Clock()
    throttle = LoginThrottle(free=0, base=10, cap=10, forget=100, clock=clock)
    fail(throttle, "a", "alice", "g")
    clock.now += 10
    with throttle.attempt("a", "alice", "right"):
        throttle.succeeded("a", "alice")
    assert len(throttle) == 0
    fail(throttle, "a", "alice", "g")
    clock.now += 100
    with throttle.attempt("a", "alice", "g"):  # forgotten: not even a delay
        pass
    assert len(throttle) == 0


def test_one_check_at_a_time_per_pair_but_the_same_credentials_share_it():
    throttle = LoginThrottle(clock=Clock())
    with throttle.attempt("a", "alice", "k1"):
        with throttle.attempt("a", "alice", "k1"):  # docker's parallel requests
            pass
        with pytest.raises(errors.TooManyRequests) as info:
            with throttle.attempt("a", "alice", "k2"):
                pass
        assert info.value.headers == {"Retry-After": "1"}
        with throttle.attempt("b", "alice", "k2"):
            pass
    with throttle.attempt("a", "alice", "k2"):
        pass
    assert len(throttle) == 0


def test_memory_is_bounded():
    clock = Clock()
    throttle = LoginThrottle(free=0, forget=60, clock=clock, max_pairs=3)
    for user in ("u1", "u2", "u3", "u4"):
        fail(throttle, "a", user, "g")
    assert len(throttle) == 3  # the longest-unused pair went
    clock.now += 61
    fail(throttle, "a", "u5", "g")
    assert len(throttle) == 1  # quiet pairs are dropped first
    clock.now += 61
    for n in range(3):  # the pair being guessed at ...
        clock.now += throttle.delay(n)
        fail(throttle, "a", "alice", f"g{n}")
    for n in range(10000):  # ... survives a flood of new pairs
        fail(throttle, f"10.{n}", "user{n}", "g")
    assert len(throttle) == 3
    with pytest.raises(errors.TooManyRequests):
        fail(throttle, "a", "alice", "g3")


def checker(tmp_path, clock):
    path = tmp_path / "htpasswd"
    path.write_text(ALICE + "\n")
    return HtpasswdChecker(HtpasswdFile(str(path)), clock=clock)


async def login(checker, password, address="10.0.0.1"):
    try:
        return await checker.authenticate(UsernamePassword(b"alice", password), address)
    except UnauthorizedLogin:
        return 401
    except errors.TooManyRequests as error:
        return 429, float(error.headers["Retry-After"])


@pytest_twisted.ensureDeferred
async def test_guessing_stays_slow_and_the_known_password_always_works(tmp_path):
    """A guesser who waits exactly as told needs at least the sum of the
    delays for its guesses (measured on the checker's clock), every
    refusal comes before bcrypt, and alice's password -- verified once --
    succeeds between any two guesses from the same address without bcrypt."""
    clock = Clock()
    alice = checker(tmp_path, clock)
    assert await login(alice, b"wonderland") == "alice"
    throttle = alice.throttle
    start, failures, refused = clock.now, 0, 0
    while failures < 20:
        runs = alice.bcrypt_runs
        answer = await login(alice, b"guess%d" % failures)
        if answer == 401:
            failures += 1
        else:
            assert alice.bcrypt_runs == runs  # refused before bcrypt
            refused += 1
            clock.now += answer[1]
        runs = alice.bcrypt_runs
        assert await login(alice, b"wonderland") == "alice"
        assert alice.bcrypt_runs == runs
    minimum = sum(throttle.delay(n) for n in range(1, 20))
    assert clock.now - start >= minimum >= 60 * 8
    assert refused == 20 - throttle.free


@pytest_twisted.ensureDeferred
async def test_a_guesser_cannot_parallelise(tmp_path):
    """Concurrent different guesses for one pair: one runs bcrypt, the
    others are refused at once; the same password sent concurrently (an
    uncached docker push) shares one check."""
    alice = checker(tmp_path, Clock())
    answers = await defer.gatherResults(
        [defer.ensureDeferred(login(alice, b"guess%d" % n)) for n in range(8)]
    )
    assert answers.count(401) == 1 and answers.count((429, 1.0)) == 7
    assert alice.bcrypt_runs == 1
    answers = await defer.gatherResults(
        [defer.ensureDeferred(login(alice, b"wonderland")) for _ in range(4)]
    )
    assert answers == ["alice"] * 4 and alice.bcrypt_runs == 2


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["10.0.0.1", "10.0.0.2", "::1"]),
            st.sampled_from(["alice", "bob", "", "x" * 300]),
            st.sampled_from(["k1", "k2"]),
            st.sampled_from(["fail", "succeed", "nested"]),
            st.floats(min_value=0, max_value=200),
        ),
        max_size=60,
    )
)
def test_any_sequence_keeps_the_bounds(steps):
    """Whatever clients do: at most max_pairs pairs are kept, a refusal's
    Retry-After is between 1 s and the cap, and a pair never waits longer
    than the cap after its last failure."""
    clock = Clock()
    throttle = LoginThrottle(free=1, base=2, cap=30, forget=100, clock=clock, max_pairs=4)
    for address, user, key, outcome, dt in steps:
        clock.now += dt
        try:
            with throttle.attempt(address, user, key):
                if outcome == "fail":
                    throttle.failed(address, user)
                elif outcome == "succeed":
                    throttle.succeeded(address, user)
                else:
                    with throttle.attempt(address, user, key):  # the same credentials join
                        pass
        except errors.TooManyRequests as error:
            assert 1 <= int(error.headers["Retry-After"]) <= 30
            clock.now += throttle.cap
            with throttle.attempt(address, user, key):  # the cap later, it is checked
                pass
        assert len(throttle) <= 4
