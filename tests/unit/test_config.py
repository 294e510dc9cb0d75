"""registryd.config: Distribution's config.yml keys in, validated Config out.

The contract under test is the operator's: every supported key has its
effect, every other key stops start-up, and every error names the key.
"""

import textwrap

import pytest

from registryd.config import (
    Config,
    ConfigError,
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
    """C{text} without the named top-level sections (and their bodies)."""
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

    from registryd.config import _Loader

    return parse_config(yaml.load(textwrap.dedent(text), Loader=_Loader))


def minimal(extra=""):
    """A valid file (inmemory storage) with C{extra} lines appended as written
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
    assert config.log == LogConfig(level="info")


def test_debian_stock_file_fails_on_auth_first(tmp_path):
    path = write(tmp_path, DEBIAN_STOCK)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "auth"
    assert str(info.value).startswith("auth: not supported by registryd yet")


def test_debian_stock_file_without_auth_fails_on_health(tmp_path):
    path = write(tmp_path, without_sections(DEBIAN_STOCK, "auth"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "health"


def test_the_real_debian_file_if_installed():
    """The file on this machine, if the docker-registry package is installed."""
    import os

    stock = "/etc/docker/registry/config.yml"
    if not os.path.exists(stock):
        pytest.skip("docker-registry is not installed")
    with pytest.raises(ConfigError) as info:
        load_config(stock)
    assert info.value.key in ("auth", "health")


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
    "addr", ["5000", "localhost", ":http", "1.2.3.4:", ":70000", "[::1]5000", "::1:5000", "[host]:1", ""]
)
def test_bad_addr_names_http_addr(addr):
    message = error_for(minimal(f"http:\n  addr: '{addr}'\n"))
    assert message.startswith("http.addr: ")


# --- unsupported keys ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("auth:\n  htpasswd: {realm: r, path: /p}\n", "auth"),
        ("health:\n  storagedriver: {enabled: true}\n", "health"),
        ("notifications:\n  endpoints: []\n", "notifications"),
        ("redis:\n  addr: localhost:6379\n", "redis"),
        ("proxy:\n  remoteurl: https://registry-1.docker.io\n", "proxy"),
        ("validation:\n  disabled: true\n", "validation.disabled"),
        ("compatibility:\n  schema1: {enabled: true}\n", "compatibility"),
        ("reporting:\n  bugsnag: {}\n", "reporting"),
        ("middleware:\n  registry: []\n", "middleware"),
        ("http:\n  tls:\n    certificate: /c\n", "http.tls"),
        ("http:\n  debug:\n    addr: :5001\n", "http.debug"),
        ("http:\n  prefix: /registry/\n", "http.prefix"),
        ("http:\n  relativeurls: true\n", "http.relativeurls"),
        ("log:\n  hooks: []\n", "log.hooks"),
        ("  maintenance:\n    uploadpurging: {enabled: false}\n", "storage.maintenance"),
        ("  redirect:\n    disable: true\n", "storage.redirect"),
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
    assert "not supported by registryd yet" in error_for(minimal("auth: {}\n"))
    message = error_for(minimal("storagee: {}\n"))
    assert message.startswith("storagee: unknown key, not supported")
    assert "storage" in message.split("supported here:")[1]


def test_the_first_unsupported_key_in_document_order_is_named():
    assert error_for(minimal("health: {}\nauth: {}\n")).startswith("health: ")
    assert error_for(minimal("auth: {}\nhealth: {}\n")).startswith("auth: ")


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
        ("version: 0.1\nstorage: {inmemory: , delete: {enabled: 'yes'}}\n", "storage.delete.enabled"),
        ("version: 0.1\nstorage: {inmemory: , delete: true}\n", "storage.delete"),
        ("version: 0.1\nstorage: {inmemory: , cache: {blobdescriptorsize: many}}\n",
         "storage.cache.blobdescriptorsize"),
        ("version: 0.1\nstorage: {inmemory: , cache: {blobdescriptor: 1}}\n",
         "storage.cache.blobdescriptor"),
        ("version: 0.1\nstorage: {inmemory: , 5: x}\n", "storage.5"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {level: verbose}\n", "log.level"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {level: 3}\n", "log.level"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {formatter: xml}\n", "log.formatter"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {fields: [a]}\n", "log.fields"),
        ("version: 0.1\nstorage: {inmemory: }\nlog: {accesslog: {disabled: 1}}\n",
         "log.accesslog.disabled"),
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
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {X-A: nosniff}}\n", "http.headers.X-A"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {X-A: [1]}}\n", "http.headers.X-A[0]"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {X-A: [ok, \"a\\nb\"]}}\n",
         "http.headers.X-A[1]"),
        ("version: 0.1\nstorage: {inmemory: }\nhttp: {headers: {'X A': [v]}}\n", "http.headers.X A"),
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


@pytest.mark.parametrize("text, got", [("- a\n- b\n", "a list"), ("hello\n", "'hello'"), ("5\n", "5")])
def test_non_mapping_top_level(tmp_path, text, got):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value) == f"top level: expected a mapping, got {got}"


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: :5000\n   headers: x\n")
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
    path = write(tmp_path, "version: 0.1\nstorage:\n  inmemory:\n  delete: {enabled: true}\n"
                           "  delete: {enabled: false}\n")
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
    with pytest.raises(ConfigError, match="validation.manifests.urls"):
        parse_config(dict(base, validation={"manifests": {"urls": {"allow": []}}}))
