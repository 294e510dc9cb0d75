"""REGISTRY_* environment overrides (registryd.config.environment): each of
Distribution's rules, registryd's additions, and hostile input."""

import string

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from registryd.config import (
    Config,
    ConfigError,
    default_document,
    environment,
    environment_keys,
    environment_summary,
    load_config,
    parse_config,
    read_document,
)

FILE = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /from-file
  delete:
    enabled: false
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
notifications:
  endpoints:
    - name: first
      url: http://hooks.example/first
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(FILE)
    return str(path)


def document(config_file, **environ):
    return read_document(config_file, environ)[0]


def test_a_variable_overrides_a_key_of_the_file(config_file):
    config = load_config(config_file, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/x"})
    assert config.storage.parameters == {"rootdirectory": "/x"}


def test_without_a_file_the_overrides_apply_to_the_defaults():
    """The issue's example: REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/x
    twistd -n registryd (no --config) stores under /x."""
    assert parse_config(default_document()) == Config()
    config = load_config(None, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/x"})
    assert config.storage.driver == "filesystem"
    assert config.storage.parameters == {"rootdirectory": "/x"}
    assert load_config(None, {}) == Config()


def test_values_are_parsed_as_yaml(config_file):
    config = load_config(
        config_file,
        {
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
            "REGISTRY_CATALOG_MAXENTRIES": "50",
        },
    )
    assert config.storage.delete_enabled is True
    assert config.listing.max_catalog_entries == 50
    mapping = document(config_file, REGISTRY_HTTP_TLS_CIPHERSUITES="[TLS_AES_128_GCM_SHA256]")
    assert mapping["http"]["tls"] == {"ciphersuites": ["TLS_AES_128_GCM_SHA256"]}


def test_a_value_that_is_not_yaml_is_refused_naming_the_variable(config_file):
    with pytest.raises(ConfigError, match=r"^REGISTRY_HTTP_ADDR: value is not valid YAML"):
        load_config(config_file, {"REGISTRY_HTTP_ADDR": "[:5000"})


def test_a_bad_value_is_refused_naming_the_variable_and_the_key(config_file):
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, {"REGISTRY_STORAGE_DELETE_ENABLED": "maybe"})
    assert str(caught.value) == (
        "REGISTRY_STORAGE_DELETE_ENABLED: storage.delete.enabled: expected true or false, got 'maybe'"
    )


def test_a_section_variable_replaces_the_whole_section(config_file):
    mapping = document(config_file, REGISTRY_LOG="{level: debug, formatter: json}")
    assert mapping["log"] == {"level": "debug", "formatter": "json"}


def test_a_word_selects_the_storage_driver_then_longer_names_fill_it(config_file):
    """Lexical order: REGISTRY_STORAGE (the whole section, Distribution's
    ``storage: s3`` form) first, then REGISTRY_STORAGE_S3_*."""
    mapping = document(
        config_file,
        REGISTRY_STORAGE_S3_REGION="us-east-1",
        REGISTRY_STORAGE_S3_BUCKET="registry",
        REGISTRY_STORAGE="s3",
        REGISTRY_STORAGE_DELETE_ENABLED="true",
    )
    assert mapping["storage"] == {
        "s3": {"bucket": "registry", "region": "us-east-1"},
        "delete": {"enabled": True},
    }
    config = parse_config(mapping)
    assert config.storage.driver == "s3"


def test_auth_is_selected_the_same_way(config_file):
    mapping = document(
        config_file,
        REGISTRY_AUTH="htpasswd",
        REGISTRY_AUTH_HTPASSWD_REALM="r",
        REGISTRY_AUTH_HTPASSWD_PATH="/p",
    )
    assert mapping["auth"] == {"htpasswd": {"realm": "r", "path": "/p"}}


def test_driver_variables_without_selection_add_a_second_driver_which_is_refused(config_file):
    with pytest.raises(
        ConfigError, match=r"^REGISTRY_STORAGE_S3_BUCKET: storage.s3: only one storage driver"
    ):
        load_config(config_file, {"REGISTRY_STORAGE_S3_BUCKET": "b"})


def test_existing_keys_match_case_insensitively_and_new_keys_are_lower_case(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("version: 0.1\nstorage:\n  filesystem:\n    rootDirectory: /a\n")
    mapping = read_document(
        str(path),
        {
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/b",
            "REGISTRY_HTTP_HEADERS_X-FRAME-OPTIONS": "[DENY]",
        },
    )[0]
    assert mapping["storage"]["filesystem"] == {"rootDirectory": "/b"}
    assert mapping["http"]["headers"] == {"x-frame-options": ["DENY"]}


def test_list_items_are_indexed_and_one_past_the_end_appends(config_file):
    mapping = document(
        config_file,
        REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL="http://hooks.example/changed",
        REGISTRY_NOTIFICATIONS_ENDPOINTS_1_NAME="second",
        REGISTRY_NOTIFICATIONS_ENDPOINTS_1_URL="http://hooks.example/second",
    )
    assert mapping["notifications"]["endpoints"] == [
        {"name": "first", "url": "http://hooks.example/changed"},
        {"name": "second", "url": "http://hooks.example/second"},
    ]


def test_an_index_past_the_end_is_refused_naming_the_variable(config_file):
    with pytest.raises(
        ConfigError,
        match=r"^REGISTRY_NOTIFICATIONS_ENDPOINTS_2_NAME: "
        r"notifications.endpoints: index 2 is past the list's end",
    ):
        load_config(config_file, {"REGISTRY_NOTIFICATIONS_ENDPOINTS_2_NAME": "x"})


def test_a_list_index_that_is_not_a_number_is_refused(config_file):
    with pytest.raises(
        ConfigError,
        match=r"^REGISTRY_NOTIFICATIONS_ENDPOINTS_FIRST_NAME: "
        r"notifications.endpoints: expected a list index",
    ):
        load_config(config_file, {"REGISTRY_NOTIFICATIONS_ENDPOINTS_FIRST_NAME": "x"})


def test_go_field_names_and_yaml_names_both_match(config_file):
    """Distribution matches its Go field names (EventConfig, FileCheckers);
    registryd also takes the YAML names."""
    for name in (
        "REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES",
        "REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES",
    ):
        assert load_config(config_file, {name: "true"}).notifications.include_references is True
    for name in ("REGISTRY_HEALTH_FILECHECKERS_0_FILE", "REGISTRY_HEALTH_FILE_0_FILE"):
        assert document(config_file, **{name: "/down"})["health"] == {"file": [{"file": "/down"}]}


def test_keys_with_underscores_match_with_their_underscores(config_file):
    mapping = document(
        config_file, REGISTRY_MANHOLE_AUTHORIZED_KEYS="/keys", REGISTRY_MANHOLE_HOST_KEY="/host"
    )
    assert mapping["manhole"] == {"authorized_keys": "/keys", "host_key": "/host"}


def test_registryd_own_keys_can_be_set(config_file):
    config = load_config(config_file, {"REGISTRY_GC_GRACEPERIOD": "2h", "REGISTRY_WORKERS": "2"})
    assert config.gc.grace_period == 7200
    assert config.workers == 2


def test_registryd_keys_come_from_the_configuration_schema(config_file):
    """Every key the schema marks as registryd's own (and what is below
    it) can be set: the UI and the manhole's limits, say."""
    from registryd.config import Config
    from registryd.config.schema import iter_keys

    table, secrets = environment_keys()
    own = [info.path for info in iter_keys(Config) if info.key.own]
    assert {"gc", "manhole", "ui", "workers", "proxy.maxblobsize"} <= set(own)
    for path in own:
        name = "REGISTRY_" + path.replace("[]", "_0").replace(".", "_").upper()
        assert environment.summary({name: "x"}, table).ignored == (), name
    mapping = document(config_file, REGISTRY_UI_ENABLED="true", REGISTRY_MANHOLE_TIMELIMIT="10s")
    assert mapping["ui"] == {"enabled": True}
    assert mapping["manhole"] == {"timelimit": "10s"}
    assert {"sessionkey", "password"} <= secrets


def test_variables_naming_nothing_anyone_knows_are_ignored(config_file):
    """Kubernetes' variables for a service called "registry", and names no
    Distribution field has: ignored, as Distribution does, and reported."""
    environ = {
        "REGISTRY_PORT": "tcp://10.0.0.7:5000",
        "REGISTRY_PORT_5000_TCP_ADDR": "10.0.0.7",
        "REGISTRY_SERVICE_HOST": "10.0.0.7",
        "REGISTRY_HTTP_NOSUCHFIELD": "1",
        "REGISTRY_GC_NOSUCHKEY": "1",
    }
    mapping, overrides = read_document(config_file, environ)
    assert mapping == yaml.safe_load(FILE)
    assert overrides.ignored == tuple(sorted(environ))
    assert overrides.applied == ()
    assert load_config(config_file, environ) == load_config(config_file, {})


@pytest.mark.parametrize(
    "name, value, key",
    [
        ("REGISTRY_REPORTING_BUGSNAG_APIKEY", "k", "reporting: not supported by registryd yet"),
        ("REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL", "a@b", "http.tls.letsencrypt"),
        ("REGISTRY_MIDDLEWARE_REGISTRY", "[{name: cloudfront}]", "middleware.registry"),
        ("REGISTRY_STORAGE_CACHE_NOSUCHKEY", "1", "storage.cache.nosuchkey: unknown key"),
    ],
)
def test_a_variable_setting_a_key_registryd_refuses_is_refused_naming_it(
    config_file, name, value, key
):
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, {name: value})
    lines = str(caught.value).splitlines()  # one per problem (a TLS section has more)
    assert any(line.startswith(f"{name}: ") and key in line for line in lines), lines


def test_overrides_say_which_key_each_variable_set(config_file):
    _, overrides = read_document(
        config_file,
        {
            "REGISTRY_STORAGE": "inmemory",
            "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_NAME": "n",
        },
    )
    assert overrides.applied == (
        environment.Override(
            "REGISTRY_NOTIFICATIONS_ENDPOINTS_0_NAME", "notifications.endpoints[0].name"
        ),
        environment.Override("REGISTRY_STORAGE", "storage"),
    )


def test_secrets_are_masked():
    mapping = {
        "storage": {"s3": {"accesskey": "AKIA", "secretkey": "s3cr3t", "bucket": "b"}},
        "proxy": {"password": "p", "username": "u"},
        "http": {"secret": "", "headers": {"Authorization": ["Basic x"]}},
    }
    assert environment.masked(mapping) == {
        "storage": {"s3": {"accesskey": "********", "secretkey": "********", "bucket": "b"}},
        "proxy": {"password": "********", "username": "u"},
        "http": {"secret": "", "headers": {"Authorization": "********"}},
    }


def test_the_file_mapping_is_not_changed():
    original = default_document()
    environment.apply(original, {"REGISTRY_STORAGE": "s3"})
    assert original == default_document()


# --- hostile input -------------------------------------------------------------

_PART = st.text(alphabet=string.ascii_uppercase + string.digits + "-.", min_size=0, max_size=12)
_NAMES = st.builds(
    lambda parts: "REGISTRY_" + "_".join(parts),
    st.lists(
        st.one_of(
            _PART,
            st.sampled_from(
                [
                    "STORAGE",
                    "FILESYSTEM",
                    "S3",
                    "HTTP",
                    "TLS",
                    "NOTIFICATIONS",
                    "ENDPOINTS",
                    "0",
                    "1",
                    "HEALTH",
                    "FILE",
                    "LOG",
                    "AUTH",
                    "MANHOLE",
                    "AUTHORIZED",
                    "KEYS",
                    "HEADERS",
                    "PROXY",
                ]
            ),
        ),
        min_size=0,
        max_size=5,
    ),
)
_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "true",
            "[",
            "{a: 1}",
            "[1, 2]",
            "s3",
            "~",
            "",
            "&a [*a]",
            "!!python/none x",
            "9" * 5000,
            "{a: 1, a: 2}",
        ]
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES, max_size=6))
def test_any_environment_gives_a_config_or_one_config_error(environ):
    """Whatever the variables: a Config, or a ConfigError with one line per
    problem, each naming a variable or key; never another exception."""
    try:
        load_config(None, environ)
    except ConfigError as error:
        for single, line in zip(error.errors, str(error).splitlines()):
            assert line == str(single) and "\n" not in line
            assert line.split(": ", 1)[0].strip(), line
    try:
        environment_summary(environ)
    except Exception as error:  # pragma: no cover - the property
        raise AssertionError(f"environment_summary raised {error!r}") from error
