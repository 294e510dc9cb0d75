"""registryd.config: Distribution's config.yml keys in, validated Config out.

The contract under test is the operator's: every supported key has its
effect, every other key stops start-up, and every error names the key.
"""

import re
import textwrap

import attr
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from registryd.config import (
    Config,
    ConfigError,
    ConfigErrors,
    HTTPConfig,
    LogConfig,
    StorageConfig,
    addr_to_endpoint,
    load_config,
    parse_config,
)

# Debian's /etc/docker/registry/config.yml (docker-registry 2.8.2), verbatim.
DEBIAN_STOCK = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: basic-realm
    path: /etc/docker/registry
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def without_sections(text, *names):
    """``text`` without the named top-level sections (and their bodies)."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line[:1].strip():  # a top-level key
            skipping = line.split(":", 1)[0] in names
        if not skipping:
            kept.append(line)
    return "".join(kept)


def write(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def parse(text):
    """Parse YAML text through the same path as a file (duplicate keys etc.)."""
    import yaml

    from registryd.config.load import Loader as _Loader

    return parse_config(yaml.load(textwrap.dedent(text), Loader=_Loader))


def minimal(extra=""):
    """A valid file (inmemory storage) with ``extra`` lines appended as written
    (indent them to continue the storage section)."""
    return "version: 0.1\nstorage:\n  inmemory:\n" + extra


def error_for(text):
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


# --- defaults and the stock Debian file --------------------------------------


def test_no_file_means_filesystem_in_registry_data_on_port_5000():
    config = load_config(None)
    assert config == Config()
    assert config.storage == StorageConfig(
        driver="filesystem", parameters={"rootdirectory": "./registry-data"}, delete_enabled=False
    )
    assert config.http.listen == ("tcp:5000",)
    assert config.http.host is None
    assert config.http.headers == {}
    assert config.log.level == "info"


def test_debian_stock_file_without_auth_and_health_parses(tmp_path):
    path = write(tmp_path, without_sections(DEBIAN_STOCK, "auth", "health"))
    config = load_config(path)
    assert config.storage == StorageConfig(
        driver="filesystem",
        parameters={"rootdirectory": "/var/lib/docker-registry"},
        delete_enabled=True,
    )
    assert config.http == HTTPConfig(
        listen=("tcp:5000",), host=None, headers={"X-Content-Type-Options": ["nosniff"]}
    )
    assert config.log == LogConfig(level="info", fields={"service": "registry"})


def test_debian_stock_file_parses_with_its_htpasswd_auth(tmp_path):
    path = write(tmp_path, DEBIAN_STOCK)
    config = load_config(path)
    assert config.auth.htpasswd.realm == "basic-realm"
    assert config.auth.htpasswd.path == "/etc/docker/registry"
    assert config.auth.token is None and config.auth.access is None


def test_debian_stock_file_without_auth_parses_with_its_health_section(tmp_path):
    path = write(tmp_path, without_sections(DEBIAN_STOCK, "auth"))
    config = load_config(path)
    assert config.health.storagedriver is True
    assert config.health.interval == 10.0
    assert config.health.threshold == 3


def test_the_real_debian_file_if_installed():
    """The file on this machine, if the docker-registry package is installed."""
    import os

    stock = "/etc/docker/registry/config.yml"
    if not os.path.exists(stock):
        pytest.skip("docker-registry is not installed")
    try:
        load_config(stock)
    except ConfigError as error:  # a key registryd lacks, named
        assert error.key and "not supported" in str(error)


def test_sample_config_in_etc_parses():
    """etc/registryd.yaml, the annotated sample, is a working configuration."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    sample = os.path.join(here, "..", "..", "etc", "registryd.yaml")
    config = load_config(sample)
    assert config.storage.driver == "filesystem"
    assert config.storage.parameters == {"rootdirectory": "/var/lib/registryd"}
    assert config.storage.delete_enabled is False
    assert config.http.listen == ("tcp:5000",)


# --- every supported key ------------------------------------------------------


def test_every_supported_key():
    config = parse(
        """\
        version: "0.1"
        log:
          level: debug
          formatter: json
          fields: {service: registry, environment: staging}
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: /srv/registry
            maxthreads: 100
          delete:
            enabled: true
          cache:
            blobdescriptor: inmemory
            blobdescriptorsize: 10000
        http:
          addr: 127.0.0.1:5001
          host: https://registry.example.com:5000
          secret: asecretforlocaldevelopment
          headers:
            X-Content-Type-Options: [nosniff]
            Strict-Transport-Security: [max-age=31536000]
        """
    )
    assert config.log.level == "debug"
    assert config.storage.driver == "filesystem"
    assert config.storage.parameters == {"rootdirectory": "/srv/registry", "maxthreads": 100}
    assert config.storage.delete_enabled is True
    assert config.http.listen == ("tcp:5001:interface=127.0.0.1",)
    assert config.http.host == "https://registry.example.com:5000"
    assert config.http.headers == {
        "X-Content-Type-Options": ["nosniff"],
        "Strict-Transport-Security": ["max-age=31536000"],
    }


@pytest.mark.parametrize("level", ["error", "warn", "info", "debug", "WARN"])
def test_log_levels(level):
    assert parse(minimal(f"log:\n  level: {level}\n")).log.level == level.lower()


def test_deprecated_loglevel_is_used_unless_log_level_is_set():
    assert parse(minimal("loglevel: error\n")).log.level == "error"
    assert parse(minimal("loglevel: error\nlog:\n  level: debug\n")).log.level == "debug"


def test_inmemory_section_may_be_empty():
    config = parse(minimal())
    assert config.storage == StorageConfig(driver="inmemory", parameters={}, delete_enabled=False)


def test_other_storage_sections_are_driver_names_with_their_parameters():
    """Driver parameters are the driver's business (plugins may add drivers)."""
    config = parse(
        """\
        version: 0.1
        storage:
          s3:
            bucket: images
            region: us-east-1
            secure: true
        """
    )
    assert config.storage.driver == "s3"
    assert config.storage.parameters == {"bucket": "images", "region": "us-east-1", "secure": True}


def test_delete_defaults_to_disabled_and_accepts_an_empty_section():
    assert parse(minimal()).storage.delete_enabled is False
    assert parse(minimal("  delete:\n")).storage.delete_enabled is False
    assert parse(minimal("  delete:\n    enabled: false\n")).storage.delete_enabled is False


def test_http_section_without_addr_listens_on_5000():
    assert parse(minimal("http:\n  secret: s\n")).http.listen == ("tcp:5000",)


def test_http_net_unix():
    config = parse(minimal("http:\n  net: unix\n  addr: /run/registryd/api.sock\n"))
    assert config.http.listen == ("unix:/run/registryd/api.sock",)


def test_with_listen_replaces_the_endpoints():
    config = parse(minimal("http:\n  addr: :6000\n")).with_listen(["tcp:1", "unix:/s"])
    assert config.http.listen == ("tcp:1", "unix:/s")


# --- http.addr conversion -----------------------------------------------------


@pytest.mark.parametrize(
    "addr, endpoint",
    [
        (":5000", "tcp:5000"),
        ("127.0.0.1:5000", "tcp:5000:interface=127.0.0.1"),
        ("0.0.0.0:80", "tcp:80:interface=0.0.0.0"),
        ("[::1]:5000", r"tcp6:5000:interface=\:\:1"),
        ("[::]:5000", r"tcp6:5000:interface=\:\:"),
        ("[fe80::1%eth0]:5000", r"tcp6:5000:interface=fe80\:\:1%eth0"),
        ("localhost:5000", "tcp:5000:interface=localhost"),
        (":0", "tcp:0"),
    ],
)
def test_addr_to_endpoint(addr, endpoint):
    assert addr_to_endpoint(addr) == endpoint
    assert parse(minimal(f"http:\n  addr: '{addr}'\n")).http.listen == (endpoint,)


@pytest.mark.parametrize(
    "addr, kind, interface",
    [
        ("[::1]:5000", "TCP6ServerEndpoint", "::1"),
        ("[fe80::1%eth0]:5000", "TCP6ServerEndpoint", "fe80::1%eth0"),
        ("127.0.0.1:5000", "TCP4ServerEndpoint", "127.0.0.1"),
        (":5000", "TCP4ServerEndpoint", ""),
    ],
)
def test_converted_addresses_parse_back_to_what_the_go_address_meant(addr, kind, interface):
    from twisted.internet.endpoints import serverFromString

    endpoint = serverFromString(object(), addr_to_endpoint(addr))  # never listens
    assert type(endpoint).__name__ == kind
    assert (endpoint._port, endpoint._interface) == (int(addr.rsplit(":", 1)[1]), interface)


@pytest.mark.parametrize(
    "addr",
    ["5000", "localhost", ":http", "1.2.3.4:", ":70000", "[::1]5000", "::1:5000", "[host]:1", ""],
)
def test_bad_addr_names_http_addr(addr):
    message = error_for(minimal(f"http:\n  addr: '{addr}'\n"))
    assert message.startswith("http.addr: ")


# --- unsupported keys ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("auth:\n  silly: {realm: r, service: s}\n", "auth.silly"),
        ("health:\n  http:\n  - {uri: 'http://h/', method: GET}\n", "health.http[0].method"),
        ("health:\n  storagedriver: {timeout: 1s}\n", "health.storagedriver.timeout"),
        ("notifications:\n  endpoints: []\n  other: 1\n", "notifications.other"),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'http://h/', queue: 5}\n",
            "notifications.endpoints[0].queue",
        ),
        ("compatibility:\n  schema1: {enabled: true}\n", "compatibility"),
        ("reporting:\n  bugsnag: {}\n", "reporting"),
        ("middleware:\n  registry: []\n", "middleware.registry"),
        (
            "http:\n  tls:\n    certificate: /c\n    key: /k\n    letsencrypt: {}\n",
            "http.tls.letsencrypt",
        ),
        ("http:\n  debug:\n    addr: :5001\n    tls: {}\n", "http.debug.tls"),
        ("log:\n  hooks: []\n", "log.hooks"),
        ("  maintenance:\n    purging: {enabled: false}\n", "storage.maintenance.purging"),
        ("  redirect:\n    disable: true\n    baseurl: https://cdn\n", "storage.redirect.baseurl"),
        ("  tag:\n    concurrencylimit: 8\n", "storage.tag"),
        ("  delete:\n    enabled: true\n    extra: 1\n", "storage.delete.extra"),
        ("  cache:\n    somethingelse: 1\n", "storage.cache.somethingelse"),
        ("log:\n  accesslog:\n    format: combined\n", "log.accesslog.format"),
    ],
)
def test_unsupported_keys_fail_naming_their_path(text, key):
    with pytest.raises(ConfigError) as info:
        parse(minimal(text))
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert "not supported" in str(info.value)


def test_distribution_keys_say_not_yet_and_unknown_keys_say_unknown():
    assert "not supported by registryd yet" in error_for(minimal("reporting: {}\n"))
    message = error_for(minimal("storagee: {}\n"))
    assert message.startswith("storagee: unknown key, not supported")
    assert "storage" in message.split("supported here:")[1]


def test_the_first_unsupported_key_in_document_order_is_named():
    assert error_for(minimal("reporting: {}\npolicy: {}\n")).startswith("reporting: ")
    assert error_for(minimal("policy: {}\nreporting: {}\n")).startswith("policy: ")


# --- bad values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("version: 0.2\nstorage: {inmemory: }\n", "version"),
        ("version: 1\nstorage: {inmemory: }\n", "version"),
        ("version: true\nstorage: {inmemory: }\n", "version"),
        ("storage: {inmemory: }\n", "version"),
        ("version: 0.1\n", "storage"),
        ("version: 0.1\nstorage: {delete: {enabled: true}}\n", "storage"),
        ("version: 0.1\nstorage: [filesystem]\n", "storage"),
        ("version: 0.1\nstorage: {filesystem: {}, inmemory: }\n", "storage.inmemory"),
        ("version: 0.1\nstorage: {filesystem: /srv}\n", "storage.filesystem"),
        (
            "version: 0.1\nstorage: {inmemory: , delete: {enabled: 'yes'}}\n",
            "storage.delete.enabled",
        ),
        ("version: 0.1\nstorage: {inmemory: , delete: true}\n", "storage.delete"),
        (
            "version: 0.1\nstorage: {inmemory: , cache: {blobdescriptorsize: many}}\n",
            "storage.cache.blobdescriptorsize",
        ),
        (
            "version: 0.1\nstorage: {inmemory: , cache: {blobdescriptor: 1}}\n",
            "storage.cache.blobdescriptor",
        ),
        ("version: 0.1\nstorage: {inmemory: , 5: x}\n", "storage.5"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {level: verbose}\n", "log.level"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {level: 3}\n", "log.level"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {formatter: xml}\n", "log.formatter"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {fields: [a]}\n", "log.fields"),
        (
            "version: 0.1\nstorage: {inmemory: }\nlog: {accesslog: {disabled: 1}}\n",
            "log.accesslog.disabled",
        ),
        ("version: 0.1\nstorage: {inmemory: }\nlog: debug\n", "log"),
        ("version: 0.1\nstorage: {inmemory: }\nloglevel: loud\n", "loglevel"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {addr: 5000}\n", "http.addr"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {net: udp}\n", "http.net"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {net: unix}\n", "http.addr"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {secret: 5}\n", "http.secret"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {host: registry.example.com}\n", "http.host"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {host: 'ftp://r.example.com'}\n", "http.host"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {host: 'https://'}\n", "http.host"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {host: 'https://r:99999'}\n", "http.host"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {host: 'https://r/?a=b'}\n", "http.host"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {headers: [a]}\n", "http.headers"),
        (
            "version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {X-A: nosniff}}\n",
            "http.headers.X-A",
        ),
        (
            "version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {X-A: [1]}}\n",
            "http.headers.X-A[0]",
        ),
        (
            'version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {X-A: [ok, "a\\nb"]}}\n',
            "http.headers.X-A[1]",
        ),
        (
            "version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {'X A': [v]}}\n",
            "http.headers.X A",
        ),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: [addr]\n", "http"),
    ],
)
def test_bad_values_name_their_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.key == key, str(info.value)
    assert str(info.value).startswith(f"{key}: ")
    assert "\n" not in str(info.value)


def test_error_message_shows_the_bad_value():
    message = error_for("version: 0.1\nstorage: {inmemory: , delete: {enabled: 5}}\n")
    assert message == "storage.delete.enabled: expected true or false, got 5"
    message = error_for("version: 0.1\nstorage: {inmemory: }\nhttp: {secret: 5}\n")
    assert message == "http.secret: expected a string, got 5"


def test_two_drivers_names_both():
    message = error_for("version: 0.1\nstorage: {filesystem: {}, inmemory: }\n")
    assert "storage.filesystem" in message and message.startswith("storage.inmemory: ")


def test_version_is_checked_before_anything_else():
    assert error_for("auth: {}\nversion: 0.2\nstorage: {inmemory: }\n").startswith("version: ")


# --- the file itself ------------------------------------------------------------


def test_empty_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""))
    assert "empty" in str(info.value)


def test_comments_only_file_is_empty(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "# nothing here\n"))
    assert "empty" in str(info.value)


@pytest.mark.parametrize(
    "text, got", [("- a\n- b\n", "a list"), ("hello\n", "'hello'"), ("5\n", "5")]
)
def test_non_mapping_top_level(tmp_path, text, got):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value) == f"top level: expected a mapping, got {got}"


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(
        tmp_path, "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: :5000\n   headers: x\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith("invalid YAML at line 6, column ")
    assert "\n" not in message


def test_yaml_unclosed_bracket(tmp_path):
    path = write(tmp_path, "version: 0.1\nstorage: {inmemory: \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("invalid YAML at line ")


def test_duplicate_keys_are_refused_with_their_line(tmp_path):
    path = write(
        tmp_path,
        "version: 0.1\nstorage:\n  inmemory:\n  delete: {enabled: true}\n"
        "  delete: {enabled: false}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "invalid YAML at line 5, column 3: duplicate key 'delete'"


def test_yaml_merge_keys_may_be_overridden_without_a_duplicate_key_error():
    config = parse(
        """\
        version: 0.1
        storage:
          inmemory:
          delete:
            <<: {enabled: true}
            enabled: false
        """
    )
    assert config.storage.delete_enabled is False


def test_python_tags_are_refused(tmp_path):
    path = write(tmp_path, "version: !!python/object:os.system {}\nstorage: {inmemory: }\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("invalid YAML at line 1")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.yml"))
    assert str(info.value) == "cannot read configuration file: No such file or directory"


# --- ConfigError itself ---------------------------------------------------------


def test_config_error_forms():
    error = ConfigError("storage.filesystem.rootdirectory", "expected a string, got 5")
    assert str(error) == "storage.filesystem.rootdirectory: expected a string, got 5"
    assert error.key == "storage.filesystem.rootdirectory"
    assert str(ConfigError("just a message")) == "just a message"


@pytest.mark.parametrize(
    "error, expected",
    [
        (ConfigError("bucket", "required"), "storage.s3.bucket: required"),
        (ConfigError("storage.s3.bucket", "required"), "storage.s3.bucket: required"),
        (ConfigError("bucket: required"), "storage.s3.bucket: required"),
        (ConfigError("storage.s3.bucket: required"), "storage.s3.bucket: required"),
        (ConfigError("no credentials found"), "storage.s3: no credentials found"),
    ],
)
def test_config_error_within_a_section(error, expected):
    assert str(error.within("storage.s3")) == expected


def test_validation_sparse_indexes():
    from registryd.config import ConfigError, parse_config

    base = {"version": 0.1, "storage": {"inmemory": {}}}
    assert parse_config(base).validation.accept_sparse_manifests is False
    config = parse_config(dict(base, validation={"manifests": {"indexes": {"platforms": "none"}}}))
    assert config.validation.accept_sparse_manifests is True
    config = parse_config(dict(base, validation={"manifests": {"indexes": {"platforms": "all"}}}))
    assert config.validation.accept_sparse_manifests is False
    with pytest.raises(ConfigError, match="validation.manifests.indexes.platforms"):
        parse_config(dict(base, validation={"manifests": {"indexes": {"platforms": "some"}}}))


def test_validation_sparse_images():
    from registryd.config import ConfigError, parse_config

    base = {"version": 0.1, "storage": {"inmemory": {}}}
    assert parse_config(base).validation.accept_sparse_images is False
    config = parse_config(dict(base, validation={"manifests": {"images": {"blobs": "none"}}}))
    assert config.validation.accept_sparse_images is True
    assert config.validation.accept_sparse_manifests is False  # indexes are separate
    config = parse_config(dict(base, validation={"manifests": {"images": {"blobs": "all"}}}))
    assert config.validation.accept_sparse_images is False
    with pytest.raises(ConfigError, match="validation.manifests.images.blobs"):
        parse_config(dict(base, validation={"manifests": {"images": {"blobs": "some"}}}))
    with pytest.raises(ConfigError, match="validation.manifests.images.layers"):
        parse_config(dict(base, validation={"manifests": {"images": {"layers": "none"}}}))


def test_validation_manifest_urls():
    from registryd.manifests.verify import URLPolicy

    base = {"version": 0.1, "storage": {"inmemory": None}}
    assert parse_config(base).validation.url_policy is None  # any URL, as before
    urls = {
        "allow": [r"^https?://([^/]+\.)*example\.com/"],
        "deny": [r"^https?://www\.example\.com/"],
    }
    config = parse_config(dict(base, validation={"manifests": {"urls": urls}}))
    assert config.validation.url_policy == URLPolicy(urls["allow"], urls["deny"])
    config = parse_config(dict(base, validation={"manifests": {"urls": {}}}))
    assert config.validation.url_policy == URLPolicy()  # Distribution: allow nothing
    for switch in ({"disabled": True}, {"enabled": False}):
        config = parse_config(dict(base, validation={"manifests": {"urls": urls}, **switch}))
        assert config.validation.url_policy is None
    with pytest.raises(ConfigError, match=r"validation.manifests.urls.allow\[1\]: not a regular"):
        parse_config(dict(base, validation={"manifests": {"urls": {"allow": ["ok", "(unclosed"]}}}))
    with pytest.raises(ConfigError, match="validation.manifests.urls.other"):
        parse_config(dict(base, validation={"manifests": {"urls": {"other": []}}}))
    with pytest.raises(ConfigError, match="validation.disabled"):
        parse_config(dict(base, validation={"disabled": "yes please"}))


# --- http.debug, health, notifications, log (operations) ---------------------


def test_debug_listener_and_prometheus():
    config = parse(
        minimal(
            "http:\n  debug:\n    addr: 127.0.0.1:5001\n    prometheus:\n"
            "      enabled: true\n      path: /debug/metrics\n"
        )
    )
    assert config.http.debug.listen == ("tcp:5001:interface=127.0.0.1",)
    assert config.http.debug.prometheus_enabled is True
    assert config.http.debug.prometheus_path == "/debug/metrics"
    config = parse(minimal("http:\n  debug:\n    addr: :5001\n"))
    assert config.http.debug.listen == ("tcp:5001",)
    assert config.http.debug.prometheus_enabled is False
    assert config.http.debug.prometheus_path == "/metrics"
    assert parse(minimal()).http.debug is None


@pytest.mark.parametrize(
    "text, key",
    [
        ("http:\n  debug:\n    prometheus: {enabled: true}\n", "http.debug.addr"),
        ("http:\n  debug:\n    addr: 5001\n", "http.debug.addr"),
        (
            "http:\n  debug:\n    addr: :5001\n    prometheus: {enabled: 1}\n",
            "http.debug.prometheus.enabled",
        ),
        (
            "http:\n  debug:\n    addr: :5001\n    prometheus: {path: metrics}\n",
            "http.debug.prometheus.path",
        ),
        ("health:\n  storagedriver: {enabled: yes please}\n", "health.storagedriver.enabled"),
        ("health:\n  storagedriver: {interval: 10}\n", "health.storagedriver.interval"),
        ("health:\n  storagedriver: {interval: 10 seconds}\n", "health.storagedriver.interval"),
        ("health:\n  storagedriver: {interval: -1s}\n", "health.storagedriver.interval"),
        ("health:\n  storagedriver: {threshold: -1}\n", "health.storagedriver.threshold"),
        ("health:\n  file:\n  - {interval: 1s}\n", "health.file[0].file"),
        ("health:\n  file: {file: /x}\n", "health.file"),
        ("health:\n  http:\n  - {interval: 1s}\n", "health.http[0].uri"),
        ("health:\n  http:\n  - {uri: 'ftp://h/'}\n", "health.http[0].uri"),
        (
            "health:\n  http:\n  - {uri: 'http://h/', statuscode: 1000}\n",
            "health.http[0].statuscode",
        ),
        ("health:\n  http:\n  - {uri: 'http://h/', headers: {A: b}}\n", "health.http[0].headers.A"),
        ("health:\n  http:\n  - {uri: 'http://h/', timeout: soon}\n", "health.http[0].timeout"),
        ("health:\n  tcp:\n  - {addr: 'redis'}\n", "health.tcp[0].addr"),
        ("health:\n  tcp:\n  - {addr: 'redis:99999'}\n", "health.tcp[0].addr"),
        ("health:\n  tcp:\n  - {timeout: 1s}\n", "health.tcp[0].addr"),
        ("health:\n  tcp:\n  - {addr: 'h:1', threshold: -2}\n", "health.tcp[0].threshold"),
        (
            "notifications:\n  endpoints:\n  - {url: 'http://h/'}\n",
            "notifications.endpoints[0].name",
        ),
        ("notifications:\n  endpoints:\n  - {name: a}\n", "notifications.endpoints[0].url"),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'ftp://h/'}\n",
            "notifications.endpoints[0].url",
        ),
        (
            "notifications:\n  endpoints:\n  - {name: ../a, url: 'http://h/'}\n",
            "notifications.endpoints[0].name",
        ),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'http://h/'}\n  - {name: a, url: 'http://i/'}\n",
            "notifications.endpoints[1].name",
        ),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'http://h/', timeout: soon}\n",
            "notifications.endpoints[0].timeout",
        ),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'http://h/', threshold: 1.5}\n",
            "notifications.endpoints[0].threshold",
        ),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'http://h/', headers: {A: b}}\n",
            "notifications.endpoints[0].headers.A",
        ),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'http://h/', ignore: {actions: [fetch]}}\n",
            "notifications.endpoints[0].ignore.actions[0]",
        ),
        (
            "notifications:\n  endpoints:\n  - {name: a, url: 'http://h/', ignoredmediatypes: [1]}\n",
            "notifications.endpoints[0].ignoredmediatypes[0]",
        ),
        ("notifications:\n  endpoints: {name: a}\n", "notifications.endpoints"),
        ("notifications:\n  journal: {maxevents: 0}\n", "notifications.journal.maxevents"),
        (
            "notifications:\n  events: {includereferences: 1}\n",
            "notifications.events.includereferences",
        ),
    ],
)
def test_operations_bad_values_name_their_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse(minimal(text))
    assert info.value.key == key, str(info.value)
    assert "\n" not in str(info.value)


def test_tls_cipher_suites():
    tls = "http:\n  tls:\n    certificate: /c\n    key: /k\n"
    config = parse(minimal(tls + "    ciphersuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"))
    assert config.http.tls.ciphersuites == ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",)
    with pytest.raises(ConfigError) as info:
        parse(minimal(tls + "    ciphersuites: [ECDHE-RSA-AES128-GCM-SHA256]\n"))
    assert info.value.key == "http.tls.ciphersuites[0]" and "Go's names" in str(info.value)


def test_http2_off_is_accepted_on_is_refused():
    parse(minimal("http:\n  http2: {disabled: true}\n  h2c: {enabled: false}\n"))
    for text, key in [
        ("http:\n  http2: {disabled: false}\n", "http.http2.disabled"),
        ("http:\n  http2: {}\n", "http.http2.disabled"),
        ("http:\n  h2c: {enabled: true}\n", "http.h2c.enabled"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse(minimal(text))
        assert info.value.key == key and "HTTP/1.1 only" in str(info.value)


def test_redis_section_of_distribution_2_8():
    text = (
        "redis:\n  addr: redis.internal:6380\n  password: s3cret\n  db: 2\n"
        "  dialtimeout: 10ms\n  readtimeout: 20ms\n  writetimeout: 30ms\n"
        "  pool: {maxidle: 16, maxactive: 64, idletimeout: 300s}\n  tls: {enabled: false}\n"
    )
    redis = parse(minimal(text)).redis
    assert redis.addrs == (("redis.internal", 6380),)
    assert (redis.password, redis.db, redis.pool_size, redis.idle_timeout, redis.tls) == (
        "s3cret",
        2,
        64,
        300.0,
        None,
    )
    assert (redis.dial_timeout, redis.read_timeout, redis.write_timeout) == pytest.approx(
        (0.01, 0.02, 0.03)
    )
    assert "s3cret" not in repr(redis)
    assert parse(minimal("")).redis is None


def test_redis_section_of_distribution_3():
    text = (
        "redis:\n  addrs: [a:6379, '[::1]:6379']\n  username: registry\n  mastername: mymaster\n"
        "  poolsize: 5\n  maxidleconns: 2\n  clientname: registryd\n"
        "  tls: {certificate: /c.pem, key: /k.pem, rootcas: [/ca.pem]}\n"
    )
    redis = parse(minimal(text)).redis
    assert redis.addrs == (("a", 6379), ("::1", 6379))
    assert (redis.username, redis.mastername, redis.pool_size) == ("registry", "mymaster", 5)
    assert (redis.tls.certificate, redis.tls.key, redis.tls.rootcas) == (
        "/c.pem",
        "/k.pem",
        ("/ca.pem",),
    )


@pytest.mark.parametrize(
    "text, key",
    [
        ("redis: localhost:6379\n", "redis"),
        ("redis: {db: 0}\n", "redis"),
        ("redis: {addr: localhost}\n", "redis.addr"),
        ("redis: {addrs: []}\n", "redis.addrs"),
        ("redis: {addrs: [a:1, b]}\n", "redis.addrs[1]"),
        ("redis: {addr: 'a:1', db: -1}\n", "redis.db"),
        ("redis: {addr: 'a:1', readtimeout: soon}\n", "redis.readtimeout"),
        ("redis: {addr: 'a:1', pool: {maxactive: 0}}\n", "redis.pool.maxactive"),
        ("redis: {addr: 'a:1', tls: {certificate: /c.pem}}\n", "redis.tls"),
        ("redis: {addr: 'a:1', sentinel: x}\n", "redis.sentinel"),
    ],
)
def test_redis_section_mistakes_name_their_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse(minimal(text))
    assert info.value.key == key


def test_redirect_middleware():
    text = (
        "middleware:\n  storage:\n    - name: redirect\n"
        "      options: {baseurl: 'https://cdn.example.com:5443/'}\n"
    )
    assert parse(minimal(text)).storage.redirect_base_url == "https://cdn.example.com:5443"
    assert parse(minimal("")).storage.redirect_base_url is None
    for bad, key in [
        (
            "middleware:\n  storage:\n    - name: cloudfront\n      options: {baseurl: 'https://x/'}\n",
            "middleware.storage[0].name",
        ),
        (
            "middleware:\n  storage:\n    - name: redirect\n",
            "middleware.storage[0].options.baseurl",
        ),
        (
            "middleware:\n  storage:\n    - name: redirect\n      options: {baseurl: 'ftp://x/'}\n",
            "middleware.storage[0].options.baseurl",
        ),
        ("middleware:\n  registry:\n    - name: x\n", "middleware.registry"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse(minimal(bad))
        assert info.value.key == key, bad


def test_listing_limits():
    config = parse(minimal("catalog:\n  maxentries: 500\ntags:\n  maxtags: 100\n"))
    assert (config.listing.max_catalog_entries, config.listing.max_tags) == (500, 100)
    assert parse(minimal("")).listing.max_catalog_entries is None
    for text, key in [
        ("catalog:\n  maxentries: 0\n", "catalog.maxentries"),
        ("tags:\n  maxtags: many\n", "tags.maxtags"),
        ("tags:\n  concurrencylimit: 8\n", "tags.concurrencylimit"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse(minimal(text))
        assert info.value.key == key


def test_http_prefix():
    assert (
        parse(minimal("http:\n  prefix: /my/nested/registry/\n")).http.prefix
        == "/my/nested/registry/"
    )
    assert parse(minimal("http:\n  prefix: /\n")).http.prefix is None
    for bad in ("registry/", "/registry", "/a//b/", "/a/../b/", "/a?x/"):
        with pytest.raises(ConfigError) as info:
            parse(minimal(f"http:\n  prefix: '{bad}'\n"))
        assert info.value.key == "http.prefix", bad


def test_relative_urls_and_drain_timeout():
    config = parse(minimal("http:\n  relativeurls: true\n  draintimeout: 60s\n"))
    assert config.http.relative_urls is True and config.http.drain_timeout == 60.0
    config = parse(minimal(""))
    assert config.http.relative_urls is False and config.http.drain_timeout == 0.0
    for text, key in [
        ("http:\n  relativeurls: maybe\n", "http.relativeurls"),
        ("http:\n  draintimeout: a while\n", "http.draintimeout"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse(minimal(text))
        assert info.value.key == key


def test_health_http_and_tcp_checks():
    """Distribution's example section, as its documentation gives it."""
    config = parse(
        minimal(
            "health:\n"
            "  http:\n"
            "    - uri: http://server.to.check/must/return/200\n"
            "      headers:\n"
            "        Authorization: [Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==]\n"
            "      statuscode: 200\n"
            "      timeout: 3s\n"
            "      interval: 10s\n"
            "      threshold: 3\n"
            "    - uri: https://other/\n"
            "  tcp:\n"
            "    - addr: redis-server.domain.com:6379\n"
            "      timeout: 3s\n"
            "      interval: 10s\n"
            "      threshold: 3\n"
            "    - addr: '[::1]:80'\n"
        )
    )
    first, second = config.health.http
    assert (first.uri, first.status_code, first.timeout, first.interval, first.threshold) == (
        "http://server.to.check/must/return/200",
        200,
        3.0,
        10.0,
        3,
    )
    assert first.headers == {"Authorization": ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="]}
    assert (second.status_code, second.timeout, second.interval, second.threshold) == (
        200,
        5.0,
        10.0,
        1,
    )
    redis, local = config.health.tcp
    assert (redis.host, redis.port, redis.timeout, redis.threshold) == (
        "redis-server.domain.com",
        6379,
        3.0,
        3,
    )
    assert (local.addr, local.host, local.port, local.threshold) == ("[::1]:80", "::1", 80, 1)


def test_health_section():
    config = parse(
        minimal(
            "health:\n  storagedriver:\n    enabled: true\n    interval: 1m30s\n    threshold: 3\n"
            "  file:\n  - file: /run/registryd/down\n    interval: 500ms\n  - file: /other\n"
        )
    )
    assert config.health.storagedriver is True
    assert config.health.interval == 90.0
    assert config.health.threshold == 3
    assert [(f.path, f.interval) for f in config.health.files] == [
        ("/run/registryd/down", 0.5),
        ("/other", 10.0),
    ]
    # Distribution's defaults: 10s, and one failure is enough
    config = parse(minimal("health:\n  storagedriver: {enabled: false}\n"))
    assert (config.health.storagedriver, config.health.interval, config.health.threshold) == (
        False,
        10.0,
        1,
    )


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("2\u00b5s", 2e-6),
        ("0", 0.0),
        (1_000_000_000, 1.0),
        ("1h2m3s4ms", 3723.004),
    ],
)
def test_go_durations(value, seconds):
    from registryd.config import parse_duration as _duration

    assert _duration(value, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "s", "10", "10 s", "1x", "-1s", ".s", True, 1.5, [1]])
def test_bad_go_durations(value):
    from registryd.config import parse_duration as _duration

    with pytest.raises(ConfigError) as info:
        _duration(value, "some.key")
    assert info.value.key == "some.key"


def test_notifications_section_with_distribution_defaults(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    config = parse(
        minimal(
            textwrap.dedent(
                """\
        notifications:
          events:
            includereferences: true
          endpoints:
            - name: alistener
              disabled: false
              url: https://my.listener.com/event
              headers:
                Authorization: [Bearer token]
              timeout: 500ms
              threshold: 5
              backoff: 2s
              ignoredmediatypes:
                - application/octet-stream
              ignore:
                mediatypes: [application/vnd.oci.image.config.v1+json]
                actions: [pull, MOUNT]
            - name: minimal
              url: http://localhost:5003/callback
            - name: quiet
              url: http://localhost:5004/callback
              disabled: true
        """
            )
        )
    )
    notifications = config.notifications
    assert notifications.include_references is True
    assert notifications.journal_directory == os.path.join(str(tmp_path), "notifications")
    first, second, third = notifications.endpoints
    assert first.name == "alistener"
    assert first.url == "https://my.listener.com/event"
    assert first.headers == {"Authorization": ["Bearer token"]}
    assert (first.timeout, first.threshold, first.backoff) == (0.5, 5, 2.0)
    assert first.ignored_media_types == (
        "application/octet-stream",
        "application/vnd.oci.image.config.v1+json",
    )
    assert first.ignored_actions == ("pull", "mount")
    assert (second.timeout, second.threshold, second.backoff) == (1.0, 10, 1.0)
    assert second.headers == {} and second.ignored_actions == ()
    assert third.disabled is True
    assert [e.name for e in notifications.enabled_endpoints] == ["alistener", "minimal"]


def test_notifications_journal_section():
    config = parse(
        minimal(
            "notifications:\n  journal: {directory: /var/lib/registryd/events, maxevents: 10}\n"
        )
    )
    assert config.notifications.journal_directory == "/var/lib/registryd/events"
    assert config.notifications.journal_max_events == 10
    assert config.notifications.endpoints == ()


def test_log_formatter_fields_and_accesslog():
    config = parse(
        minimal(
            "log:\n  formatter: JSON\n  fields: {service: registry}\n"
            "  accesslog: {disabled: true}\n"
        )
    )
    assert config.log.formatter == "json"
    assert config.log.fields == {"service": "registry"}
    assert config.log.accesslog is False
    config = parse(minimal())
    assert (config.log.formatter, config.log.fields, config.log.accesslog) == (None, {}, True)


# --- storage.maintenance, gc, manhole -------------------------------------------


def test_maintenance_defaults_are_distributions():
    from registryd.config import MaintenanceConfig, UploadPurgingConfig

    maintenance = parse(minimal()).storage.maintenance
    assert maintenance == MaintenanceConfig()
    assert maintenance.upload_purging == UploadPurgingConfig(
        enabled=True, age=168 * 3600.0, interval=24 * 3600.0, dry_run=False
    )
    assert maintenance.read_only is False


def test_maintenance_section():
    config = parse(
        minimal(
            "  maintenance:\n"
            "    uploadpurging:\n      enabled: true\n      age: 2h30m\n      interval: 45m\n"
            "      dryrun: true\n"
            "    readonly:\n      enabled: true\n"
        )
    )
    purging = config.storage.maintenance.upload_purging
    assert (purging.enabled, purging.age, purging.interval, purging.dry_run) == (
        True,
        9000.0,
        2700.0,
        True,
    )
    assert config.storage.maintenance.read_only is True
    off = parse(minimal("  maintenance:\n    uploadpurging: {enabled: false}\n"))
    assert off.storage.maintenance.upload_purging.enabled is False


@pytest.mark.parametrize(
    "text, key, problem",
    [
        ("    uploadpurging: {age: soon}\n", "storage.maintenance.uploadpurging.age", "duration"),
        (
            "    uploadpurging: {interval: 0s}\n",
            "storage.maintenance.uploadpurging.interval",
            "at least 1s",
        ),
        (
            "    uploadpurging: {enabled: yes please}\n",
            "storage.maintenance.uploadpurging.enabled",
            "true or false",
        ),
        (
            "    uploadpurging: {ages: 1h}\n",
            "storage.maintenance.uploadpurging.ages",
            "unknown key",
        ),
        ("    readonly: {enabled: 1}\n", "storage.maintenance.readonly.enabled", "true or false"),
        ("    readonly: true\n", "storage.maintenance.readonly", "mapping"),
    ],
)
def test_maintenance_errors_name_the_key(text, key, problem):
    message = error_for(minimal("  maintenance:\n" + text))
    assert message.startswith(f"{key}: ") and problem in message


def test_gc_section():
    from registryd.config import GCConfig

    assert parse(minimal()).gc == GCConfig(
        grace_period=3600.0, interval=None, delete_untagged=False, dry_run=False
    )
    config = parse(
        minimal(
            "gc:\n  graceperiod: 30m\n  interval: 24h\n  deleteuntagged: true\n  dryrun: true\n"
        )
    )
    assert config.gc == GCConfig(
        grace_period=1800.0, interval=86400.0, delete_untagged=True, dry_run=True
    )
    assert parse(minimal("gc: {interval: 0}\n")).gc.interval is None
    assert parse(minimal("gc: {graceperiod: 0s}\n")).gc.grace_period == 0.0
    assert error_for(minimal("gc: {interval: 10ms}\n")).startswith("gc.interval: must be 0")
    assert error_for(minimal("gc: {graceperiod: -1h}\n")).startswith("gc.graceperiod: ")
    assert error_for(minimal("gc: {schedule: daily}\n")).startswith("gc.schedule: unknown key")


@pytest.mark.parametrize(
    "gc, warned",
    [
        ("gc: {interval: 1h, graceperiod: 5m}\n", ("5m", "1h")),
        ("gc: {interval: 24h, graceperiod: 0s}\n", ("0s", "24h")),
        ("gc: {interval: 30m, graceperiod: 9m59s}\n", ("9m59s", "30m")),
        ("gc: {interval: 1h, graceperiod: 10m}\n", None),
        ("gc: {interval: 1h}\n", None),  # the default hour
        ("gc: {graceperiod: 1m}\n", None),  # no schedule: collections by hand only
        ("gc: {interval: 0, graceperiod: 1m}\n", None),
        ("", None),
    ],
)
def test_a_short_grace_period_with_scheduled_gc_is_warned_about(gc, warned):
    """Scheduled collections with a grace period under 10 minutes can take
    the blobs of a push in progress: one line naming both keys, their
    values and what to set; nothing otherwise."""
    from registryd.config.advice import config_advice

    advice = config_advice(parse(minimal(gc)))
    if warned is None:
        assert advice == ()
        return
    grace, interval = warned
    [line] = advice
    assert line.startswith(f"gc.graceperiod {grace} with gc.interval {interval}: "), line
    assert "set gc.graceperiod to at least 10m" in line and "\n" not in line, line


def test_manhole_section(tmp_path, monkeypatch):
    from registryd.config import ManholeConfig

    assert parse(minimal()).manhole is None
    monkeypatch.chdir(tmp_path)
    config = parse(minimal("manhole:\n  authorized_keys: keys\n"))
    assert config.manhole == ManholeConfig(
        authorized_keys=str(tmp_path / "keys"),
        listen="tcp:5022:interface=127.0.0.1",
        user="admin",
        host_key=str(tmp_path / "manhole_host_key"),
    )
    config = parse(
        minimal(
            "manhole:\n  listen: tcp:2222:interface=10.0.0.1\n  authorized_keys: /etc/k\n"
            "  user: ops\n  host_key: /var/lib/registryd/hostkey\n"
            "  timelimit: 1m30s\n  memorylimit: 1073741824\n"
        )
    )
    assert config.manhole == ManholeConfig(
        authorized_keys="/etc/k",
        listen="tcp:2222:interface=10.0.0.1",
        user="ops",
        host_key="/var/lib/registryd/hostkey",
        timelimit=90.0,
        memorylimit=1073741824,
    )
    assert (
        ManholeConfig(authorized_keys="/k").timelimit,
        ManholeConfig(authorized_keys="/k").memorylimit,
    ) == (30.0, 512 * 1024 * 1024)


@pytest.mark.parametrize(
    "text, key, problem",
    [
        ("manhole: {}\n", "manhole.authorized_keys", "required"),
        ("manhole: {authorized_keys: k, user: 'a b'}\n", "manhole.user", "user name"),
        ("manhole: {authorized_keys: k, listen: ''}\n", "manhole.listen", "endpoint"),
        ("manhole: {authorized_keys: ''}\n", "manhole.authorized_keys", "file path"),
        ("manhole: {authorized_keys: k, password: x}\n", "manhole.password", "unknown key"),
        ("manhole: {authorized_keys: k, timelimit: 10ms}\n", "manhole.timelimit", "at least 0.1s"),
        ("manhole: {authorized_keys: k, timelimit: forever}\n", "manhole.timelimit", "duration"),
        (
            "manhole: {authorized_keys: k, memorylimit: 1000}\n",
            "manhole.memorylimit",
            "at least 1048576",
        ),
        ("manhole: {authorized_keys: k, memorylimit: 1G}\n", "manhole.memorylimit", "integer"),
    ],
)
def test_manhole_errors_name_the_key(text, key, problem):
    message = error_for(minimal(text))
    assert message.startswith(f"{key}: ") and problem in message


# --- storage.redirect ----------------------------------------------------------


def test_redirect_is_off_by_default():
    assert parse(minimal()).storage.redirect is False
    # Distribution's sample line alone does not turn it on in registryd.
    assert parse(minimal("  redirect:\n    disable: false\n")).storage.redirect is False


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  redirect:\n    enabled: true\n", True),
        ("  redirect:\n    enabled: true\n    disable: false\n", True),
        ("  redirect:\n    enabled: false\n", False),
        ("  redirect:\n    disable: true\n", False),
        ("  redirect:\n", False),
    ],
)
def test_redirect_enabled_and_disable(text, expected):
    assert parse(minimal(text)).storage.redirect is expected


def test_redirect_enabled_and_disabled_at_once_is_refused():
    message = error_for(minimal("  redirect:\n    enabled: true\n    disable: true\n"))
    assert message.startswith("storage.redirect.disable: ")
    assert "contradicts" in message


@pytest.mark.parametrize("key", ["enabled", "disable"])
def test_redirect_values_must_be_booleans(key):
    message = error_for(minimal(f"  redirect:\n    {key}: yes please\n"))
    assert message.startswith(f"storage.redirect.{key}: expected true or false")


# --- auth and http.tls ---------------------------------------------------------


def test_http_tls_section():
    config = parse(
        minimal(
            "http:\n  tls:\n    certificate: /etc/c.pem\n    key: /etc/k.pem\n"
            "    clientcas: [/etc/ca1.pem, /etc/ca2.pem]\n    minimumtls: tls1.3\n"
        )
    )
    tls = config.http.tls
    assert (tls.certificate, tls.key, tls.clientcas) == (
        "/etc/c.pem",
        "/etc/k.pem",
        ("/etc/ca1.pem", "/etc/ca2.pem"),
    )
    assert tls.clientauth == "require-and-verify-client-cert" and tls.minimumtls == "tls1.3"
    assert parse(minimal()).http.tls is None


@pytest.mark.parametrize(
    "text, start",
    [
        ("    certificate: /c\n", "http.tls.key: required"),
        (
            "    certificate: /c\n    key: /k\n    minimumtls: tls1.0\n",
            "http.tls.minimumtls: tls1.0 is not supported",
        ),
        (
            "    certificate: /c\n    key: /k\n    clientauth: request-client-cert\n",
            "http.tls.clientauth: expected one of",
        ),
        (
            "    certificate: /c\n    key: /k\n    clientcas: /ca\n",
            "http.tls.clientcas: expected a list",
        ),
        (
            "    certificate: /c\n    key: /k\n    ciphersuites: TLS_AES_128_GCM_SHA256\n",
            "http.tls.ciphersuites: expected a list",
        ),
        (
            "    certificate: /c\n    key: /k\n    letsencrypt: {email: a@b}\n",
            "http.tls.letsencrypt: not supported by registryd yet",
        ),
    ],
)
def test_http_tls_errors_name_the_key(text, start):
    assert error_for(minimal("http:\n  tls:\n" + text)).startswith(start)


AUTH_ALL = """\
auth:
  htpasswd: {realm: team, path: /etc/registryd/htpasswd}
  token: {service: registry.example.com, issuer: registryd}
  tokenserver: {key: /etc/registryd/token.key, expiration: 600}
  access:
    groups: {admins: [alice]}
    rules:
      - {repositories: ["public/**"], anonymous: true, actions: [pull]}
      - {repositories: ["**"], groups: [admins], actions: ["*"]}
      - {repositories: ["${user}/**"], users: ["*"], actions: [pull, push]}
"""


def test_auth_sections():
    auth = parse(minimal(AUTH_ALL)).auth
    assert auth.htpasswd.realm == "team" and auth.htpasswd.path == "/etc/registryd/htpasswd"
    assert (auth.token.service, auth.token.issuer, auth.token.realm) == (
        "registry.example.com",
        "registryd",
        None,
    )
    assert auth.tokenserver.expiration == 600 and auth.tokenserver.key == "/etc/registryd/token.key"
    assert auth.access.groups == {"admins": ("alice",)}
    assert [rule.actions for rule in auth.access.rules] == [{"pull"}, {"*"}, {"pull", "push"}]
    assert parse(minimal()).auth is None
    external = parse(
        minimal(
            "auth:\n  token: {realm: https://auth.example.com/token, service: s, issuer: i,"
            " rootcertbundle: /b.pem, signingalgorithms: [RS256, ES256]}\n"
        )
    ).auth
    assert external.token.algorithms == ("RS256", "ES256") and external.htpasswd is None


@pytest.mark.parametrize(
    "text, start",
    [
        ("auth:\n  htpasswd: {realm: r}\n", "auth.htpasswd.path: required"),
        (
            "auth:\n  token: {service: s, issuer: i, rootcertbundle: /b}\n",
            "auth.token.realm: required",
        ),
        (
            "auth:\n  token: {realm: r, service: s, issuer: i}\n",
            "auth.token: required: rootcertbundle or jwks",
        ),
        (
            "auth:\n  token: {realm: r, service: s, issuer: i, jwks: /j, signingalgorithms: [HS256]}\n",
            "auth.token.signingalgorithms[0]: HS256 (a shared secret) is not supported",
        ),
        (
            "auth:\n  htpasswd: {realm: r, path: /p}\n  token: {realm: r, service: s, issuer: i, jwks: /j}\n",
            "auth: configure one of htpasswd and token",
        ),
        ("auth:\n  tokenserver: {key: /k}\n", "auth.tokenserver: needs auth.token"),
        (
            "auth:\n  token: {realm: r, service: s, issuer: i, jwks: /j}\n  access: {rules: []}\n",
            "auth.access: access rules need auth.htpasswd",
        ),
        (
            "auth:\n  htpasswd: {realm: r, path: /p}\n  access:\n    rules:\n"
            "      - {repositories: [a], groups: [devs], actions: [pull]}\n",
            "auth.access.rules[0].groups: group 'devs' is not defined",
        ),
        (
            "auth:\n  htpasswd: {realm: r, path: /p}\n  access:\n    rules:\n"
            "      - {repositories: [a], users: [x], actions: [pull, fly]}\n",
            "auth.access.rules[0].actions[1]: expected one of pull, push, delete, *",
        ),
        (
            "auth:\n  htpasswd: {realm: r, path: /p}\n  access:\n    rules:\n"
            "      - {repositories: [a], actions: [pull]}\n",
            "auth.access.rules[0]: names nobody",
        ),
        (
            "auth:\n  htpasswd: {realm: r, path: /p}\n  access:\n    rules:\n"
            "      - {repositories: ['A B'], users: [x], actions: [pull]}\n",
            "auth.access.rules[0].repositories[0]: expected a repository name pattern",
        ),
        (
            "auth:\n  htpasswd: {realm: r, path: /p}\n  token: {service: s, issuer: i}\n"
            "  tokenserver: {key: /k, expiration: 30}\n",
            "auth.tokenserver.expiration: expected at least 60",
        ),
    ],
)
def test_auth_errors_name_the_key(text, start):
    assert error_for(minimal(text)).startswith(start)


def test_auth_files_are_checked_when_the_registry_is_made(tmp_path):
    """registryd.auth.create reads the files and names the key of a bad one."""
    from registryd.auth import create

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:$2y$05$PycBSUOjqvPLzhT6YjpAKuzt7V1wNOQVjs8NEy5jOODS3euN/ejFO\n")
    key = tmp_path / "token.key"
    key.write_text("not a key")
    text = AUTH_ALL.replace("/etc/registryd/htpasswd", str(htpasswd)).replace(
        "/etc/registryd/token.key", str(key)
    )
    with pytest.raises(ConfigError) as info:
        create(parse(minimal(text)))
    assert info.value.key == "auth.tokenserver.key"
    from tests import certs

    key.write_bytes(certs.key_pem(certs.new_key()))
    authorizer, issuer = create(parse(minimal(text)))
    assert issuer is not None and issuer.expiration == 600
    htpasswd.write_text("broken\n")
    with pytest.raises(ConfigError) as info:
        create(parse(minimal(text)))
    assert info.value.key == "auth.htpasswd.path"


# --- workers (registryd's own key) -------------------------------------------


def test_workers_default_number_and_auto():
    import os

    assert parse(minimal()).workers == 1
    assert parse(minimal("workers: 3\n")).workers == 3
    assert parse(minimal("workers: auto\n")).workers == max(1, os.cpu_count() or 1)


@pytest.mark.parametrize(
    "value, problem",
    [
        ("0", "expected 1 to 256 processes, got 0"),
        ("1000", "expected 1 to 256 processes, got 1000"),
        ("many", "expected a number of processes or 'auto'"),
        ("true", "expected an integer"),
        ("[2]", "expected an integer"),
    ],
)
def test_workers_errors_name_the_key(value, problem):
    assert error_for(minimal(f"workers: {value}\n")).startswith(f"workers: {problem}")


# --- proxy (pull-through cache) -----------------------------------------------


def test_proxy_defaults_and_values():
    assert parse(minimal()).proxy is None
    config = parse(minimal("proxy:\n  remoteurl: https://registry-1.docker.io/\n"))
    assert config.proxy.remote_url == "https://registry-1.docker.io"
    assert config.proxy.username is None and config.proxy.password is None
    assert config.proxy.ttl == 168 * 3600.0
    config = parse(
        minimal(
            "proxy:\n  remoteurl: http://127.0.0.1:5000\n  username: u\n  password: p\n  ttl: 1h30m\n"
        )
    )
    assert (config.proxy.username, config.proxy.password, config.proxy.ttl) == ("u", "p", 5400.0)
    assert "p" not in repr(config.proxy).split("username")[1]  # the password is not shown
    assert parse(minimal("proxy:\n  remoteurl: http://h\n  ttl: 0\n")).proxy.ttl == 0
    assert config.proxy.max_blob_size == 10 * 1024**3
    assert (
        parse(
            minimal("proxy:\n  remoteurl: http://h\n  maxblobsize: 1048576\n")
        ).proxy.max_blob_size
        == 1048576
    )


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("proxy: {}\n", "proxy.remoteurl", "required"),
        ("proxy:\n  remoteurl: registry-1.docker.io\n", "proxy.remoteurl", "absolute http(s) URL"),
        ("proxy:\n  remoteurl: ftp://h/\n", "proxy.remoteurl", "absolute http(s) URL"),
        ("proxy:\n  remoteurl: https://h:99999\n", "proxy.remoteurl", "absolute http(s) URL"),
        ("proxy:\n  remoteurl: https://h/?x=1\n", "proxy.remoteurl", "without query"),
        ("proxy:\n  remoteurl: 5\n", "proxy.remoteurl", "expected a string"),
        ("proxy:\n  remoteurl: https://h\n  username: u\n", "proxy.password", "required"),
        ("proxy:\n  remoteurl: https://h\n  password: p\n", "proxy.username", "required"),
        ("proxy:\n  remoteurl: https://h\n  ttl: forever\n", "proxy.ttl", "duration"),
        (
            "proxy:\n  remoteurl: https://h\n  maxblobsize: 0\n",
            "proxy.maxblobsize",
            "positive number of bytes",
        ),
        (
            "proxy:\n  remoteurl: https://h\n  maxblobsize: 1GB\n",
            "proxy.maxblobsize",
            "expected an integer",
        ),
        ("proxy:\n  remoteurl: https://h\n  ttl: -1h\n", "proxy.ttl", ""),
        (
            "proxy:\n  remoteurl: https://h\n  exec: {command: helper}\n",
            "proxy.exec",
            "not supported",
        ),
        ("proxy: [https://h]\n", "proxy", "expected a mapping"),
    ],
)
def test_proxy_bad_values_name_their_key(text, key, words):
    with pytest.raises(ConfigError) as info:
        parse(minimal(text))
    assert info.value.key == key
    assert words in str(info.value)


def test_the_sample_proxy_example_parses():
    """etc/registryd.yaml's commented proxy: example, uncommented, is valid."""
    import os

    sample = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "registryd.yaml")
    lines = open(sample, encoding="utf-8").read().splitlines()
    start = lines.index("# proxy:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    config = parse(minimal("\n".join(block) + "\n"))
    assert config.proxy.remote_url == "https://registry-1.docker.io"
    assert config.proxy.username == "mirror-user" and config.proxy.ttl == 168 * 3600.0


def test_every_config_field_is_named_as_the_file_spells_it():
    """Messages about a loaded configuration (a SIGHUP reload's "restart
    to apply it") name keys through key_as_written; a field whose name is
    not its key (an underscore where the key has none) needs an entry
    there, or operators read ``gc.grace_period`` and search the file in vain."""
    from registryd.config import ManholeConfig, ProxyConfig, key_as_written

    sections = {"manhole": ManholeConfig, "proxy": ProxyConfig}  # None by default
    names = []
    for section in attr.fields(Config):
        names.append(section.name)
        kind = sections.get(section.name)
        if isinstance(section.default, attr.Factory):
            kind = type(section.default.factory())
        if kind is not None and attr.has(kind):
            names += [f"{section.name}.{field.name}" for field in attr.fields(kind)]
    written_with_underscores = {"manhole.authorized_keys", "manhole.host_key"}
    for name in names:
        if "_" in name and name not in written_with_underscores:
            assert "_" not in key_as_written(name), name
    assert key_as_written("gc.grace_period") == "gc.graceperiod"
    assert key_as_written("storage.parameters", Config()) == "storage.filesystem"


# --- every error of a file at once -------------------------------------------


def test_all_errors_of_a_file_are_reported_one_line_each():
    text = textwrap.dedent("""\
        version: 0.1
        storage:
          inmemory:
          delete: {enabled: 1}
        http:
          addr: nowhere
        bogus: 1
        gc: {graceperiod: soon}
        """)
    with pytest.raises(ConfigErrors) as info:
        parse_config(yaml.safe_load(text))
    assert [error.key for error in info.value.errors] == [
        "storage.delete.enabled",
        "http.addr",
        "bogus",
        "gc.graceperiod",
    ]
    assert str(info.value).splitlines() == [str(error) for error in info.value.errors]
    # code reading one error sees the first
    assert info.value.key == "storage.delete.enabled"


def test_a_file_of_many_errors_reports_a_bounded_number_of_lines():
    mapping = {"version": "0.1", "storage": {"inmemory": None}}
    mapping.update({f"bogus{index}": 1 for index in range(1000)})
    with pytest.raises(ConfigErrors) as info:
        parse_config(mapping)
    assert len(info.value.errors) == 1000
    lines = str(info.value).splitlines()
    assert len(lines) == ConfigErrors.MAX_REPORTED + 1
    assert lines[-1] == f"... and {1000 - ConfigErrors.MAX_REPORTED} more problems"


_SECTIONS = (
    "log",
    "storage",
    "http",
    "validation",
    "health",
    "notifications",
    "gc",
    "auth",
    "proxy",
    "catalog",
    "tags",
    "workers",
    "manhole",
    "bogus",
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.text(max_size=8),
    st.sampled_from(["10s", "0", "true", ":5000", "/tmp/x", "info"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "enabled",
                    "addr",
                    "level",
                    "graceperiod",
                    "x",
                    "rootdirectory",
                    "inmemory",
                    "filesystem",
                    "delete",
                    "interval",
                    "url",
                    "name",
                    "endpoints",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_SECTIONS), _values, max_size=6))
def test_each_reported_error_is_what_its_section_alone_reports(sections):
    """Hostile documents: parsing never fails other than with ConfigError;
    every problem is one line starting with a key path; and collecting
    changes nothing about what is found: the problems of the whole file
    are exactly those of each top-level section parsed on its own."""

    def document(mapping):  # with a valid storage section unless it has one
        whole = {"version": "0.1"}
        if "storage" not in mapping:
            whole["storage"] = {"inmemory": None}
        whole.update(mapping)
        return whole

    def problems(mapping):
        try:
            parse_config(mapping)
        except ConfigError as error:
            return [str(single) for single in error.errors]
        return []

    whole = problems(document(sections))
    alone = [line for key, value in sections.items() for line in problems(document({key: value}))]
    assert whole == alone
    for line in whole:
        assert "\n" not in line and re.match(r"[\w.\[\]\-]+: \S", line), line
