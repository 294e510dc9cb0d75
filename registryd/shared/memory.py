"""The shared state of a node that shares it with no one.

Everything lives in dictionaries on the reactor thread, so each operation
is atomic; expiry is checked when a name is read (and expired names are
pruned as new ones come, so memory stays bounded by what is live).
"""

from collections import OrderedDict

from twisted.internet import defer
from zope.interface import implementer

from registryd.interfaces import ISharedState


def _default_reactor():
    from twisted.internet import reactor

    return reactor


@implementer(ISharedState)
class MemorySharedState:
    shared = False

    #: most metadata cache entries kept (least recently stored out first)
    max_cache_entries = 65536

    def __init__(self, reactor=None):
        self._reactor = reactor  # None: the global one, looked up when first needed
        self._values = {}  # name -> (value, expiry or None)
        self._sets = {}  # name -> {member: expiry}
        self._tables = {}  # name -> ({field: number}, expiry)
        self._writes = 0
        self._cache = OrderedDict()  # name -> [epoch, value or None, version, expiry]
        self._epoch = 0
        self._versions = 0  # the last version a forget gave (versions only grow)
        self._floor = 0  # the newest version of an entry dropped whole
        self._cache_members = {}  # member -> expiry

    def _now(self):
        if self._reactor is None:
            self._reactor = _default_reactor()
        return self._reactor.seconds()

    def _expiry(self, ttl):
        return None if ttl is None else self._now() + ttl

    def _live(self, name):
        entry = self._values.get(name)
        if entry is not None and entry[1] is not None and entry[1] <= self._now():
            del self._values[name]
            return None
        return entry

    def _wrote(self):
        """Every so many writes, drop what has expired unread."""
        self._writes += 1
        if self._writes % 1024 == 0:
            for name in list(self._values):
                self._live(name)
            for name in list(self._sets):
                self._members(name)
            for name in list(self._tables):
                self._table(name)

    def acquire(self, name, token, ttl):
        if self._live(name) is not None:
            return defer.succeed(False)
        self._values[name] = (token, self._expiry(ttl))
        self._wrote()
        return defer.succeed(True)

    def extend(self, name, token, ttl):
        entry = self._live(name)
        if entry is None or entry[0] != token:
            return defer.succeed(False)
        self._values[name] = (token, self._expiry(ttl))
        return defer.succeed(True)

    def release(self, name, token):
        entry = self._live(name)
        if entry is None or entry[0] != token:
            return defer.succeed(False)
        del self._values[name]
        return defer.succeed(True)

    def remaining(self, name):
        entry = self._live(name) or self._table(name)
        if entry is None or entry[1] is None:
            return defer.succeed(None)
        return defer.succeed(entry[1] - self._now())

    def get(self, name):
        entry = self._live(name)
        return defer.succeed(None if entry is None else entry[0])

    def set(self, name, value, ttl=None):
        self._values[name] = (bytes(value), self._expiry(ttl))
        self._wrote()
        return defer.succeed(None)

    def delete(self, name):
        self._values.pop(name, None)
        self._sets.pop(name, None)
        self._tables.pop(name, None)
        return defer.succeed(None)

    def incr(self, name, amount=1, ttl=None):
        entry = self._live(name)
        value = (int(entry[0]) if entry is not None else 0) + amount
        expiry = self._expiry(ttl) if ttl is not None else (entry[1] if entry is not None else None)
        self._values[name] = (value, expiry)
        self._wrote()
        return defer.succeed(value)

    def _members(self, name):
        members = self._sets.get(name)
        if members is None:
            return {}
        now = self._now()
        for member in [m for m, expiry in members.items() if expiry <= now]:
            del members[member]
        if not members:
            del self._sets[name]
        return members

    def add_member(self, name, member, ttl):
        members = self._members(name)
        if not members:
            members = self._sets[name] = {}
        members[member] = max(members.get(member, 0.0), self._now() + ttl)
        self._wrote()
        return defer.succeed(None)

    def remove_member(self, name, member):
        self._members(name).pop(member, None)
        self._members(name)
        return defer.succeed(None)

    def is_member(self, name, member):
        return defer.succeed(member in self._members(name))

    def members(self, name):
        return defer.succeed(sorted(self._members(name)))

    def _table(self, name):
        entry = self._tables.get(name)
        if entry is not None and entry[1] <= self._now():
            del self._tables[name]
            return None
        return entry

    def merge_latest(self, name, values, ttl):
        entry = self._table(name)
        table = entry[0] if entry is not None else {}
        for field, number in values.items():
            if table.get(field, float("-inf")) < number:
                table[field] = float(number)
        self._tables[name] = (table, self._now() + ttl)
        self._wrote()
        return defer.succeed(None)

    def latest(self, name):
        entry = self._table(name)
        return defer.succeed(dict(entry[0]) if entry is not None else {})

    def remove_fields(self, name, fields):
        entry = self._table(name)
        if entry is not None:
            table = entry[0]
            for field, bound in fields.items():
                if field in table and (bound is None or table[field] <= bound):
                    del table[field]
            if not table:
                del self._tables[name]
        return defer.succeed(None)

    def _cache_entry(self, name):
        entry = self._cache.get(name)
        if entry is not None and entry[3] <= self._now():
            self._dropped(name)
            return None
        return entry

    def _dropped(self, name):
        """Forget an entry whole; a stamp given before must not match a
        later lookup's, so absent entries report the newest version dropped."""
        entry = self._cache.pop(name)
        self._floor = max(self._floor, entry[2])

    def _version(self, entry):
        return self._floor if entry is None else entry[2]

    def _keep(self, name, entry):
        self._cache.pop(name, None)
        self._cache[name] = entry
        while len(self._cache) > self.max_cache_entries:
            self._dropped(next(iter(self._cache)))

    def _sweep_cache_members(self):
        now = self._now()
        expired = [member for member, expiry in self._cache_members.items() if expiry <= now]
        for member in expired:
            del self._cache_members[member]
        if expired:
            self._epoch += 1

    def cache_join(self, member, ttl):
        self._sweep_cache_members()
        self._cache_members[member] = self._now() + ttl
        return defer.succeed(None)

    def cache_lookup(self, names):
        self._sweep_cache_members()
        found = []
        for name in names:
            entry = self._cache_entry(name)
            hit = entry is not None and entry[0] == self._epoch and entry[1] is not None
            found.append((entry[1] if hit else None, (self._epoch, self._version(entry))))
        return defer.succeed(found)

    def cache_fill(self, name, stamp, value, ttl):
        entry = self._cache_entry(name)
        version = self._version(entry)
        if stamp != (self._epoch, version):
            return defer.succeed(False)
        self._keep(name, [self._epoch, bytes(value), version, self._now() + ttl])
        return defer.succeed(True)

    def cache_forget(self, names, ttl):
        for name in names:
            self._cache_entry(name)  # expired: dropped first
            self._versions += 1
            self._keep(name, [self._epoch, None, self._versions, self._now() + ttl])
        return defer.succeed(None)

    def cache_new_epoch(self, member, ttl):
        self.cache_join(member, ttl)
        self._epoch += 1
        return defer.succeed(None)

    def ping(self):
        return defer.succeed(None)

    def close(self):
        return defer.succeed(None)
