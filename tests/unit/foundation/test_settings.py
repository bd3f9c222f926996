import pytest

from sidecars import settings
from sidecars.settings import ConfigError


def load_problems(command: settings.SidecarName, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings.load(command, env)
    return caught.value.problems


def test_breaker_defaults_follow_the_contract() -> None:
    loaded = settings.load_proxy("breaker", {"BREAKER_UPSTREAM": "http://db-api:8080"})
    (route,) = loaded.routes
    assert str(route.listen) == "127.0.0.1:15001"
    assert str(loaded.common.admin_listen) == "0.0.0.0:9901"
    assert route.retry.max_attempts == 1
    assert route.breaker.enabled
    assert route.breaker.failure_threshold == 5
    assert route.breaker.failure_ratio is None
    assert route.breaker.failure_statuses == frozenset(range(500, 600))
    assert route.connect_timeout == 2.0
    assert route.timeout == 30.0
    assert route.retry.retry_on.kinds == {"connect-failure", "reset", "timeout"}
    assert route.retry.retry_on.statuses == {502, 503, 504}
    assert route.retry.max_retry_body == 1024 * 1024
    assert loaded.common.drain_timeout == 20.0
    assert route.name == "db-api"


def test_ambassador_defaults_differ_only_where_the_contract_says() -> None:
    loaded = settings.load_proxy("ambassador", {"AMBASSADOR_UPSTREAM": "https://api.example.com"})
    (route,) = loaded.routes
    assert str(route.listen) == "127.0.0.1:15002"
    assert str(loaded.common.admin_listen) == "0.0.0.0:9902"
    assert route.retry.max_attempts == 3
    assert route.upstream.port == 443
    assert route.upstream.tls


def test_upstream_forms() -> None:
    up = settings.upstream_url("http://svc:8080/api/v1/")
    assert (up.scheme, up.host, up.port, up.path_prefix) == ("http", "svc", 8080, "/api/v1")
    assert up.authority == "svc:8080"
    assert settings.upstream_url("https://svc").authority == "svc"
    assert settings.upstream_url("tcp://db:5432").port == 5432
    for bad in ("ftp://x", "http://", "tcp://db", "http://u:p@h", "http://h/?q=1", "svc:80"):
        with pytest.raises(ValueError):
            settings.upstream_url(bad)


def test_cluster_settings_defaults_and_forms() -> None:
    loaded = settings.load_proxy("breaker", {"BREAKER_UPSTREAM": "http://a:80, http://b:80"})
    (route,) = loaded.routes
    assert [u.host for u in route.upstream.urls] == ["a", "b"]
    assert route.cluster.lb == "least-request"
    assert route.cluster.outlier == settings.OutlierSettings(5, 30.0, 300.0, 50)
    assert not route.cluster.health_checks
    assert (route.cluster.health_check_interval, route.cluster.health_check_timeout) == (5, 1)
    assert (route.cluster.healthy_threshold, route.cluster.unhealthy_threshold) == (2, 3)
    assert loaded.dns_servers == ()
    srv = settings.upstream_cluster("http://_payments._tcp.orders.local")
    assert srv.srv and not settings.upstream_url("http://payments.orders.local").srv
    tcp_srv = settings.upstream_cluster("tcp://_redis._tcp.cache.local")
    assert tcp_srv.srv
    loaded = settings.load_proxy(
        "breaker",
        {
            "BREAKER_UPSTREAM": "http://a:80",
            "BREAKER_DNS_SERVERS": "10.0.0.2, 127.0.0.1:5353",
            "BREAKER_LB": "ewma",
            "BREAKER_HEALTH_CHECK_PATH": "/healthz",
            "BREAKER_OUTLIER_CONSECUTIVE_FAILURES": "0",
        },
    )
    assert [str(s) for s in loaded.dns_servers] == ["10.0.0.2:53", "127.0.0.1:5353"]
    (route,) = loaded.routes
    assert route.cluster.lb == "ewma" and route.cluster.health_checks
    assert route.cluster.outlier.consecutive_failures == 0


def test_cluster_settings_problems() -> None:
    problems = load_problems(
        "breaker",
        {
            "BREAKER_UPSTREAM": "http://a:80,https://b:443",
            "BREAKER_LB": "fastest",
            "BREAKER_DNS_SERVERS": "dns.local",
            "BREAKER_OUTLIER_MAX_EJECTED_PERCENT": "150",
            "BREAKER_HEALTH_CHECK_PATH": "healthz",
            "BREAKER_FALLBACK_UPSTREAM": "http://_api._tcp.x.local:8080",
        },
    )
    joined = "\n".join(problems)
    for variable in (
        "BREAKER_UPSTREAM",
        "BREAKER_LB",
        "BREAKER_DNS_SERVERS",
        "BREAKER_OUTLIER_MAX_EJECTED_PERCENT",
        "BREAKER_HEALTH_CHECK_PATH",
        "BREAKER_FALLBACK_UPSTREAM",
    ):
        assert variable in joined
    assert "one scheme" in joined and "its ports come from DNS" in joined


def test_every_problem_is_reported_at_once_with_variable_value_and_allowed() -> None:
    problems = load_problems(
        "breaker",
        {
            "BREAKER_UPSTREAM": "http://svc:80",
            "BREAKER_FAILURE_THRESHOLD": "0",
            "BREAKER_FAILURE_RATIO": "1.5",
            "BREAKER_OPEN_SECONDS": "soon",
            "BREAKER_FAILURE_STATUSES": "700",
            "SIDECAR_LOG_LEVEL": "loud",
        },
    )
    assert len(problems) == 5
    joined = "\n".join(problems)
    for fragment in (
        "BREAKER_FAILURE_THRESHOLD='0'",
        "BREAKER_FAILURE_RATIO='1.5'",
        "BREAKER_OPEN_SECONDS='soon'",
        "BREAKER_FAILURE_STATUSES='700'",
        "SIDECAR_LOG_LEVEL='loud'",
        "one of debug, info, warn, error",
    ):
        assert fragment in joined


def test_missing_upstream_and_misspelt_variable() -> None:
    problems = load_problems("breaker", {"BREAKER_FAILURE_TRESHOLD": "3"})
    assert problems == [
        "BREAKER_UPSTREAM is required: the upstream URL, e.g. http://payments:8080",
        "BREAKER_FAILURE_TRESHOLD is not a known setting: did you mean "
        "BREAKER_FAILURE_THRESHOLD?",
    ]


@pytest.mark.parametrize("command", ["breaker", "ambassador", "log-adapter"])
def test_a_misspelt_common_variable_is_an_error_for_every_sidecar(command: str) -> None:
    env = {"BREAKER_UPSTREAM": "http://a:1", "AMBASSADOR_UPSTREAM": "http://a:1"}
    problems = load_problems(command, {**env, "SIDECAR_DRAIN_TIMOUT": "5s"})
    assert (
        "SIDECAR_DRAIN_TIMOUT is not a known setting: did you mean SIDECAR_DRAIN_TIMEOUT?"
        in problems
    )


def test_protocol_and_upstream_must_agree() -> None:
    problems = load_problems(
        "breaker", {"BREAKER_UPSTREAM": "http://db:5432", "BREAKER_PROTOCOL": "tcp"}
    )
    assert any("does not fit BREAKER_PROTOCOL=tcp" in problem for problem in problems)
    problems = load_problems("breaker", {"BREAKER_UPSTREAM": "tcp://db:5432"})
    assert any("set BREAKER_PROTOCOL=tcp" in problem for problem in problems)
    tcp = settings.load_proxy(
        "breaker", {"BREAKER_UPSTREAM": "tcp://db:5432", "BREAKER_PROTOCOL": "tcp"}
    )
    assert tcp.routes[0].protocol == "tcp"


def test_cross_field_rules() -> None:
    problems = load_problems(
        "ambassador",
        {
            "AMBASSADOR_UPSTREAM": "http://svc:80",
            "AMBASSADOR_BACKOFF_BASE": "1s",
            "AMBASSADOR_BACKOFF_MAX": "100ms",
            "AMBASSADOR_TIMEOUT": "1s",
            "AMBASSADOR_PER_TRY_TIMEOUT": "2s",
            "AMBASSADOR_ADMIN_LISTEN": "127.0.0.1:15002",
        },
    )
    assert len(problems) == 3
    assert "BACKOFF_MAX" in problems[0]
    assert "PER_TRY_TIMEOUT" in problems[1]
    assert "127.0.0.1:15002 is used by more than one listener" in problems[2]


def test_route_table_inherits_and_overrides() -> None:
    loaded = settings.load_proxy(
        "ambassador",
        {
            "AMBASSADOR_ROUTES": "payments,search",
            "AMBASSADOR_MAX_ATTEMPTS": "4",
            "AMBASSADOR_TIMEOUT": "5s",
            "AMBASSADOR_ROUTE_PAYMENTS_UPSTREAM": "https://pay.example.com",
            "AMBASSADOR_ROUTE_PAYMENTS_LISTEN": "127.0.0.1:16001",
            "AMBASSADOR_ROUTE_PAYMENTS_RETRY_NON_IDEMPOTENT": "off",
            "AMBASSADOR_ROUTE_SEARCH_UPSTREAM": "http://search:9200",
            "AMBASSADOR_ROUTE_SEARCH_LISTEN": "127.0.0.1:16002",
            "AMBASSADOR_ROUTE_SEARCH_MAX_ATTEMPTS": "2",
        },
    )
    payments, search = loaded.routes
    assert (payments.name, payments.retry.max_attempts, payments.timeout) == ("payments", 4, 5.0)
    assert (search.name, search.retry.max_attempts, search.timeout) == ("search", 2, 5.0)
    assert str(search.listen) == "127.0.0.1:16002"


def test_route_needs_its_own_listen_port_and_a_valid_name() -> None:
    problems = load_problems(
        "ambassador",
        {
            "AMBASSADOR_ROUTES": "a,b-c",
            "AMBASSADOR_ROUTE_A_UPSTREAM": "http://a:80",
        },
    )
    assert problems == [
        "AMBASSADOR_ROUTE_A_LISTEN is required: each route has its own port",
        "AMBASSADOR_ROUTES has 'b-c': route names are letters and digits",
    ]


def test_log_adapter_settings() -> None:
    loaded = settings.load_log_adapter(
        {
            "LOGADAPTER_INPUTS": "stdin,forward,tail",
            "LOGADAPTER_TAIL_PATHS": "/var/log/app/*.log",
            "LOGADAPTER_OUTPUTS": "stdout,forward://collector:24224,file:///var/log/out.jsonl",
            "LOGADAPTER_BUFFER_MAX": "8MiB",
        }
    )
    assert loaded.inputs == ("stdin", "forward", "tail")
    assert loaded.buffer_max == 8 * 1024 * 1024
    assert str(loaded.forward_listen) == "0.0.0.0:24224"
    assert str(loaded.common.admin_listen) == "0.0.0.0:9903"


def test_log_adapter_problems() -> None:
    problems = load_problems(
        "log-adapter",
        {
            "LOGADAPTER_INPUTS": "stdin,kafka,tail",
            "LOGADAPTER_OUTPUTS": "s3://bucket",
            "LOGADAPTER_FORMAT": "regex:no-groups",
        },
    )
    joined = "\n".join(problems)
    assert "LOGADAPTER_INPUTS='stdin,kafka,tail'" in joined
    assert "LOGADAPTER_OUTPUTS='s3://bucket'" in joined
    assert "LOGADAPTER_FORMAT='regex:no-groups'" in joined
    assert "LOGADAPTER_TAIL_PATHS is required" in joined


def test_log_adapter_input_bounds() -> None:
    defaults = settings.load_log_adapter({})
    assert defaults.line_hard_cap == 8 * 1024 * 1024
    assert defaults.forward_handshake_timeout == 10.0
    assert defaults.forward_idle_timeout is None
    loaded = settings.load_log_adapter(
        {
            "LOGADAPTER_LINE_HARD_CAP": "1MiB",
            "LOGADAPTER_FORWARD_HANDSHAKE_TIMEOUT": "2s",
            "LOGADAPTER_FORWARD_IDLE_TIMEOUT": "5m",
        }
    )
    assert loaded.line_hard_cap == 1024 * 1024
    assert loaded.forward_handshake_timeout == 2.0
    assert loaded.forward_idle_timeout == 300.0
    off = settings.load_log_adapter({"LOGADAPTER_FORWARD_IDLE_TIMEOUT": "off"})
    assert off.forward_idle_timeout is None
    problems = load_problems(
        "log-adapter",
        {
            "LOGADAPTER_MAX_LINE_BYTES": "1MiB",
            "LOGADAPTER_LINE_HARD_CAP": "64KiB",
            "LOGADAPTER_FORWARD_HANDSHAKE_TIMEOUT": "0",
        },
    )
    assert problems == [
        "LOGADAPTER_LINE_HARD_CAP='64KiB' is invalid: expected a size of at least "
        "LOGADAPTER_MAX_LINE_BYTES",
        "LOGADAPTER_FORWARD_HANDSHAKE_TIMEOUT='0' is invalid: expected a duration above zero "
        "(250ms, 2s, 1m)",
    ]


def test_json_view_masks_secrets() -> None:
    loaded = settings.load_proxy(
        "breaker",
        {
            "BREAKER_UPSTREAM": "http://svc:80",
            "BREAKER_STATE_REDIS_URL": "redis://:hunter2@redis:6379/0",
            "SIDECAR_ADMIN_TOKEN": "tok-123",
        },
    )
    view = settings.to_json_dict(loaded)
    text = repr(view)
    assert "hunter2" not in text
    assert "tok-123" not in text
    assert view["common"]["admin_token"] == "***"
    assert view["routes"][0]["breaker"]["state_redis_url"] == "redis://:***@redis:6379/0"
    assert view["routes"][0]["breaker"]["failure_statuses"] == "500-599"


def test_log_adapter_remote_outputs() -> None:
    loaded = settings.load_log_adapter(
        {
            "AWS_REGION": "eu-west-1",
            "LOGADAPTER_OUTPUTS": "cloudwatch:///ecs/shop,otlp+https://otel:4318,"
            "http://vector:8080/logs",
            "LOGADAPTER_OTLP_HEADERS": "x-aws-log-group=/ecs/shop, api-key=s%3Dcret",
            "LOGADAPTER_CLOUDWATCH_STREAM": "{service}/{ecs.task_arn}",
            "LOGADAPTER_CLOUDWATCH_RETENTION_DAYS": "30",
        }
    )
    remote = loaded.remote
    assert remote.cloudwatch_region == "eu-west-1"
    assert remote.cloudwatch_stream == "{service}/{ecs.task_arn}"
    assert remote.cloudwatch_retention_days == 30
    assert remote.otlp_headers == (("x-aws-log-group", "/ecs/shop"), ("api-key", "s=cret"))
    assert (remote.otlp_encoding, remote.otlp_compression) == ("protobuf", "gzip")
    assert remote.http_compression == "none"
    view = settings.to_json_dict(loaded)["remote"]
    assert view["otlp_headers"] == {"x-aws-log-group": "***", "api-key": "***"}


def test_log_adapter_remote_output_problems() -> None:
    problems = load_problems(
        "log-adapter",
        {
            "LOGADAPTER_OUTPUTS": "cloudwatch://bad:group,http://user:pw@host/x,cloudwatch://ok",
            "LOGADAPTER_CLOUDWATCH_STREAM": "{service",
            "LOGADAPTER_CLOUDWATCH_RETENTION_DAYS": "2",
            "LOGADAPTER_OTLP_ENCODING": "thrift",
            "LOGADAPTER_OTLP_HEADERS": "no-equals-sign",
            "LOGADAPTER_OTLP_SIGV4": "s3",
        },
    )
    joined = "\n".join(problems)
    assert "LOGADAPTER_OUTPUTS='cloudwatch://bad:group'" in joined
    assert "LOGADAPTER_OUTPUTS='http://user:***@host/x'" in joined
    assert "pw@" not in joined
    assert "LOGADAPTER_CLOUDWATCH_REGION is required" in joined
    assert "LOGADAPTER_CLOUDWATCH_STREAM='{service'" in joined
    assert "LOGADAPTER_CLOUDWATCH_RETENTION_DAYS='2'" in joined
    assert "LOGADAPTER_OTLP_ENCODING='thrift'" in joined
    assert "LOGADAPTER_OTLP_HEADERS='no-equals-sign'" in joined
    assert "LOGADAPTER_OTLP_SIGV4='s3'" in joined


def test_emf_output_defaults_to_the_first_cloudwatch_output_else_stdout() -> None:
    def emf_output(env: dict[str, str]) -> str | None:
        return settings.load_log_adapter({"AWS_REGION": "eu-west-1", **env}).remote.emf_output

    assert emf_output({"LOGADAPTER_EMF_NAMESPACE": "shop"}) == "stdout"
    assert emf_output(
        {"LOGADAPTER_EMF_NAMESPACE": "shop", "LOGADAPTER_OUTPUTS": "stdout,cloudwatch://g"}
    ) == "cloudwatch://g"
    assert emf_output({"LOGADAPTER_OUTPUTS": "cloudwatch://g"}) is None
    problems = load_problems("log-adapter", {"LOGADAPTER_EMF_OUTPUT": "kafka://x"})
    assert any(problem.startswith("LOGADAPTER_EMF_OUTPUT='kafka://x'") for problem in problems)


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("BREAKER_UPSTREAM", "http://127.0.0.3:0", "a port from 1 to 65535"),
        ("BREAKER_UPSTREAM", "http://127.0.0.2:8080,,", "without empty items"),
        ("BREAKER_DNS_SERVERS", "127.0.0.1:53,", "without empty items"),
        ("BREAKER_HEALTH_CHECK_PATH", "/h?x=1#frag", "no fragment"),
        ("BREAKER_STATE_REDIS_URL", "redis://:pw@127.0.0.1:xx/0", "a port from 1 to 65535"),
        ("BREAKER_STATE_REDIS_URL", "redis://127.0.0.1:99999/0", "a port from 1 to 65535"),
    ],
)
def test_values_that_cannot_work_are_configuration_errors(
    variable: str, value: str, allowed: str
) -> None:
    env = {"BREAKER_UPSTREAM": "http://127.0.0.2:8080", variable: value}
    with pytest.raises(ConfigError) as raised:
        settings.load_proxy("breaker", env)
    [problem] = raised.value.problems
    assert problem.startswith(variable) and allowed in problem, problem
    assert "pw@" not in problem
