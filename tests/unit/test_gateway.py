"""local.gateway (API Gateway HTTP API emulation) and local.invoke (sam local invoke stand-in),
driven with a throwaway template and throwaway handlers so every behaviour is pinned down."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from local import invoke as local_invoke
from local.gateway import Gateway, GatewayConfigError, fold_headers, overrun_failure
from local.servers import serve
from local.template import Template, load_template, load_yaml

TEMPLATE = """\
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Timeout: 5
    Environment:
      Variables:
        SHARED: one
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: KeyAuth
        Authorizers:
          KeyAuth:
            FunctionArn: !GetAtt AuthFn.Arn
            AuthorizerPayloadFormatVersion: "2.0"
            EnableSimpleResponses: true
            EnableFunctionDefaultPermissions: true
            Identity:
              Headers: [X-Key]
              ReauthorizeEvery: {ttl}
  AuthFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: auth/
  EchoFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Environment:
        Variables:
          ECHO_ONLY: "1"
      Events:
        Item: {{Type: HttpApi, Properties: {{ApiId: !Ref Api, Path: "/items/{{item_id}}", Method: GET}}}}
        Special: {{Type: HttpApi, Properties: {{ApiId: !Ref Api, Path: /items/special, Method: GET}}}}
        Create: {{Type: HttpApi, Properties: {{ApiId: !Ref Api, Path: /items, Method: POST}}}}
        Files: {{Type: HttpApi, Properties: {{ApiId: !Ref Api, Path: "/files/{{proxy+}}", Method: GET}}}}
        Open:
          Type: HttpApi
          Properties: {{ApiId: !Ref Api, Path: /open, Method: ANY, Auth: {{Authorizer: NONE}}}}
  ValueFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: value/
      Events:
        Value:
          Type: HttpApi
          Properties: {{ApiId: !Ref Api, Path: "/value/{{kind}}", Method: GET, Auth: {{Authorizer: NONE}}}}
  BoomFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: boom/
      Events:
        Boom: {{Type: HttpApi, Properties: {{ApiId: !Ref Api, Path: /boom, Method: GET}}}}
"""

HANDLERS = {
    # Records its calls so tests can tell whether the gateway invoked it at all.
    "auth": """
        CALLS = []

        def handler(event, context):
            CALLS.append(event)
            mode = event["headers"].get("x-key")
            if mode == "raise":
                raise RuntimeError("authorizer broke")
            if mode == "malformed":
                return {"allowed": True}
            return {"isAuthorized": mode != "deny", "context": {"user_id": "usr_" + mode}}
    """,
    "echo": """
        import json
        import os

        def handler(event, context):
            return {
                "statusCode": 200,
                "headers": {"content-type": "application/json"},
                "body": json.dumps({
                    "event": event,
                    "context": {
                        "function_name": context.function_name,
                        "memory": context.memory_limit_in_mb,
                        "arn": context.invoked_function_arn,
                        "remaining": context.get_remaining_time_in_millis(),
                        "request_id": context.aws_request_id,
                    },
                }),
            }
    """,
    "value": """
        import base64
        import decimal

        def handler(event, context):
            kind = event["pathParameters"]["kind"]
            if kind == "list":
                return [1, "two"]
            if kind == "dict":
                return {"hello": "world", "n": decimal.Decimal("1.5")}
            if kind == "string":
                return "plain"
            if kind == "binary":
                return {
                    "statusCode": 201,
                    "headers": {"X-One": "1", "Content-Type": "application/octet-stream"},
                    "cookies": ["a=1; Path=/", "b=2"],
                    "body": base64.b64encode(b"\\x00\\x01\\x02").decode(),
                    "isBase64Encoded": True,
                }
            if kind == "nobody":
                return {"statusCode": 204}
            if kind == "badbody":
                return {"statusCode": 200, "body": {"not": "a string"}}
            if kind == "unserialisable":
                return {"statusCode": 200, "body": object()}
            raise ValueError(kind)
    """,
    "boom": """
        def handler(event, context):
            raise KeyError("boom")
    """,
}


def write_project(root: Path, *, ttl: int = 0, template: str = TEMPLATE) -> Path:
    for name, code in HANDLERS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "app.py").write_text(textwrap.dedent(code))
    path = root / "template.yaml"
    path.write_text(template.format(ttl=ttl))
    return path


@pytest.fixture
def template(tmp_path: Path) -> Template:
    return load_template(write_project(tmp_path), stack_name="t")


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def gateway(template: Template, log: io.StringIO) -> Gateway:
    return Gateway(template, log=log)


@pytest.fixture
def client(gateway: Gateway) -> Client:
    return Client(gateway)


def auth_calls(gateway: Gateway) -> list[dict[str, Any]]:
    """The events the authorizer handler has received (it records them in its module)."""
    return sys.modules[gateway.handler("AuthFn").__module__].CALLS


def echoed(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data(as_text=True))


# -- routing and the 2.0 event ---------------------------------------------------------------------


def test_path_parameters_are_url_decoded_and_raw_path_is_not(client: Client) -> None:
    out = echoed(client.get("/items/jane%40acme.com", headers={"X-Key": "k"}))
    event = out["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{item_id}"
    assert event["rawPath"] == "/items/jane%40acme.com"
    assert event["pathParameters"] == {"item_id": "jane@acme.com"}
    assert event["requestContext"]["http"]["path"] == "/items/jane%40acme.com"
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["routeKey"] == "GET /items/{item_id}"
    assert event["requestContext"]["stage"] == "$default"
    assert event["isBase64Encoded"] is False
    assert "body" not in event and "queryStringParameters" not in event


def test_literal_route_beats_parameter_and_greedy_takes_the_rest(client: Client) -> None:
    assert (
        echoed(client.get("/items/special", headers={"X-Key": "k"}))["event"]["routeKey"]
        == "GET /items/special"
    )
    event = echoed(client.get("/files/a/b%20c.txt", headers={"X-Key": "k"}))["event"]
    assert event["routeKey"] == "GET /files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b c.txt"}


def test_query_headers_and_cookies_are_folded_like_payload_2(client: Client) -> None:
    out = echoed(
        client.get(
            "/items/1?a=1&a=2&b=x%20y&empty=",
            headers=[("X-Key", "k"), ("X-Upper", "v")],
        )
    )
    event = out["event"]
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y&empty="
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y", "empty": ""}
    assert event["headers"]["x-upper"] == "v"
    assert all(name == name.lower() for name in event["headers"])
    assert "cookies" not in event
    assert event["headers"]["host"] == event["requestContext"]["domainName"] == "localhost"
    ctx = event["requestContext"]
    assert ctx["accountId"] == "123456789012" and len(ctx["apiId"]) == 10
    assert isinstance(ctx["timeEpoch"], int) and ctx["time"].endswith("+0000")
    assert ctx["requestId"] and ctx["http"]["sourceIp"]


def test_repeated_headers_are_comma_joined() -> None:
    headers, cookies = fold_headers([("X-A", "1"), ("x-a", "2"), ("Cookie", "a=1"), ("cookie", "b=2; c=3")])
    assert headers == {"x-a": "1,2"}
    assert cookies == ["a=1", "b=2", "c=3"]


def test_through_a_real_http_server(gateway: Gateway) -> None:
    # The werkzeug server (what the stack runs) hands over the raw URI and repeated headers itself.
    with serve(gateway) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("GET", "/items/a%2Fb%40c?x=1&x=2")
        for name, value in [("X-Key", "k"), ("X-Multi", "one"), ("X-Multi", "two"), ("Cookie", "s=1; t=2")]:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
    assert response.status == 200
    event = body["event"]
    assert event["rawPath"] == "/items/a%2Fb%40c"
    assert event["pathParameters"] == {"item_id": "a/b@c"}  # %2F stays inside one segment
    assert event["headers"]["x-multi"] == "one,two"
    assert event["cookies"] == ["s=1", "t=2"]
    assert "cookie" not in event["headers"]
    assert event["queryStringParameters"] == {"x": "1,2"}
    assert event["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert event["headers"]["x-forwarded-proto"] == "http"


def test_text_body_is_passed_as_text_and_binary_as_base64(client: Client) -> None:
    event = echoed(client.post("/items", json={"name": "x"}, headers={"X-Key": "k"}))["event"]
    assert json.loads(event["body"]) == {"name": "x"} and event["isBase64Encoded"] is False
    event = echoed(
        client.post(
            "/items", data=b"\x89PNG\x00", headers={"X-Key": "k", "Content-Type": "application/octet-stream"}
        )
    )["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x89PNG\x00"


def test_handler_gets_a_lambda_like_context(client: Client) -> None:
    ctx = echoed(client.get("/items/1", headers={"X-Key": "k"}))["context"]
    assert ctx["function_name"] == "t-EchoFn"
    assert ctx["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:t-EchoFn"
    assert ctx["memory"] == "128"
    assert 0 < ctx["remaining"] <= 5000


def test_unknown_path_and_wrong_method_are_404(client: Client) -> None:
    for response in (client.get("/nope"), client.delete("/items/1"), client.get("/items/1/extra")):
        assert response.status_code == 404
        assert response.get_json() == {"message": "Not Found"}


def test_function_for_route(gateway: Gateway) -> None:
    assert gateway.function_for_route("GET", "/items/42") == "EchoFn"
    assert gateway.function_for_route("PATCH", "/open") == "EchoFn"  # ANY
    assert gateway.function_for_route("GET", "/value/list") == "ValueFn"
    assert gateway.function_for_route("PUT", "/items/42") is None


# -- the authorizer --------------------------------------------------------------------------------


def test_authorizer_allows_and_its_context_reaches_the_handler(gateway: Gateway, client: Client) -> None:
    event = echoed(client.get("/items/7?q=1", headers={"X-Key": "alice"}))["event"]
    assert event["requestContext"]["authorizer"] == {"lambda": {"user_id": "usr_alice"}}
    [auth_event] = auth_calls(gateway)
    assert auth_event["version"] == "2.0" and auth_event["type"] == "REQUEST"
    assert auth_event["identitySource"] == ["alice"]
    assert auth_event["routeKey"] == "GET /items/{item_id}"
    assert auth_event["routeArn"].endswith(f"{event['requestContext']['apiId']}/$default/GET/items/7")
    assert auth_event["pathParameters"] == {"item_id": "7"}
    assert auth_event["queryStringParameters"] == {"q": "1"}
    assert auth_event["headers"]["x-key"] == "alice"


def test_missing_identity_header_is_401_without_invoking_the_authorizer(
    gateway: Gateway, client: Client
) -> None:
    response = client.get("/items/1")
    assert response.status_code == 401
    assert response.get_json() == {"message": "Unauthorized"}
    assert auth_calls(gateway) == []


def test_denied_is_403(client: Client) -> None:
    response = client.get("/items/1", headers={"X-Key": "deny"})
    assert response.status_code == 403
    assert response.get_json() == {"message": "Forbidden"}


@pytest.mark.parametrize("mode", ["raise", "malformed"])
def test_authorizer_failure_is_500(client: Client, log: io.StringIO, mode: str) -> None:
    response = client.get("/items/1", headers={"X-Key": mode})
    assert response.status_code == 500
    assert response.get_json() == {"message": "Internal Server Error"}
    assert "AuthFn" in log.getvalue()


def test_open_route_skips_the_authorizer(gateway: Gateway, client: Client) -> None:
    event = echoed(client.put("/open"))["event"]
    assert "authorizer" not in event["requestContext"]
    assert event["routeKey"] == "ANY /open"
    assert auth_calls(gateway) == []


def test_authorizer_results_are_cached_for_their_ttl(tmp_path: Path) -> None:
    gateway = Gateway(load_template(write_project(tmp_path, ttl=300)), log=io.StringIO())
    client = Client(gateway)
    for _ in range(3):
        assert client.get("/items/1", headers={"X-Key": "bob"}).status_code == 200
    assert client.get("/items/1", headers={"X-Key": "carol"}).status_code == 200
    assert [e["identitySource"] for e in auth_calls(gateway)] == [["bob"], ["carol"]]


# -- invoke permissions ----------------------------------------------------------------------------


def test_without_the_authorizers_permission_every_authorized_route_is_500(tmp_path: Path) -> None:
    # SAM grants API Gateway nothing on an HttpApi Lambda authorizer unless told to: on AWS every
    # authorized route answers 500 and the authorizer never runs. Open routes are unaffected.
    bare = TEMPLATE.replace("            EnableFunctionDefaultPermissions: true\n", "")
    assert bare != TEMPLATE
    log = io.StringIO()
    gateway = Gateway(load_template(write_project(tmp_path, template=bare), stack_name="t"), log=log)
    client = Client(gateway)
    response = client.get("/items/1", headers={"X-Key": "alice"})
    assert response.status_code == 500
    assert response.get_json() == {"message": "Internal Server Error"}
    assert auth_calls(gateway) == []
    assert "does not have permissions to call the authorizer AuthFn" in log.getvalue()
    assert client.get("/value/string").status_code == 200


def test_the_real_template_without_the_authorizer_permission_answers_500(tmp_path: Path) -> None:
    # template.yaml as it was before EnableFunctionDefaultPermissions: every authorized route is 500.
    root = Path(__file__).resolve().parents[2]
    data = load_yaml(root / "template.yaml")
    authorizer = data["Resources"]["HttpApi"]["Properties"]["Auth"]["Authorizers"]["ApiKeyAuthorizer"]
    assert authorizer.pop("EnableFunctionDefaultPermissions") is True
    log = io.StringIO()
    gateway = Gateway(Template(data, path=root / "template.yaml", stack_name="t"), log=log)
    client = Client(gateway)
    for path in ("/api/v1/calendar/connections", "/api/v1/calendar/events"):
        response = client.get(path, headers={"Authorization": "Token k"})
        assert response.status_code == 500
        assert response.get_json() == {"message": "Internal Server Error"}
    assert "does not have permissions to call the authorizer AuthorizerFunction" in log.getvalue()
    assert "AuthorizerFunction" not in gateway._handlers  # never even loaded, let alone invoked


def test_the_authorizers_permission_covers_every_authorizer_invocation(gateway: Gateway) -> None:
    # SAM's permission allows {api}/authorizers/*, whichever route the request is for.
    client = Client(gateway)
    for path in ("/items/1", "/items/special", "/files/a/b"):
        assert client.get(path, headers={"X-Key": "alice"}).status_code == 200
    assert client.post("/items", headers={"X-Key": "alice"}).status_code == 200
    assert len(auth_calls(gateway)) == 4


def _translated_without(template: Template, drop: str) -> None:
    resources = template.translated["Resources"]
    assert resources.pop(drop)["Type"] == "AWS::Lambda::Permission"


def test_a_route_function_without_its_permission_is_500(tmp_path: Path) -> None:
    # The translated template as SAM emits it, less the permission of one route (as a hand-written
    # OpenAPI body without its AWS::Lambda::Permission would leave it): only that route fails.
    log = io.StringIO()
    template = load_template(write_project(tmp_path), stack_name="t")
    _translated_without(template, "EchoFnCreatePermission")
    client = Client(Gateway(template, log=log))
    response = client.post("/items", headers={"X-Key": "alice"})
    assert response.status_code == 500
    assert response.get_json() == {"message": "Internal Server Error"}
    assert "does not have permissions to call the integration EchoFn" in log.getvalue()
    assert client.get("/items/1", headers={"X-Key": "alice"}).status_code == 200


def test_a_permission_grants_only_its_method_and_path(tmp_path: Path) -> None:
    template = load_template(write_project(tmp_path), stack_name="t")
    permission = template.translated["Resources"]["ValueFnValuePermission"]["Properties"]
    source = permission["SourceArn"]["Fn::Sub"]
    assert source[0].endswith("/GET/value/*")
    source[0] = source[0].replace("/GET/value/*", "/POST/value/*")
    client = Client(Gateway(template, log=io.StringIO()))
    assert client.get("/value/string").status_code == 500


def test_a_greedy_parameter_not_named_proxy_leaves_its_route_without_permission(tmp_path: Path) -> None:
    # SAM's translator writes {name} and {proxy+} as * in the permission's SourceArn but leaves any
    # other greedy name as written, and the SourceArn API Gateway invokes from carries the request
    # path: such a route's permission never matches (the template must call it {proxy+}).
    text = TEMPLATE.replace('Path: "/files/{{proxy+}}"', 'Path: "/files/{{path+}}"')
    template = load_template(write_project(tmp_path, template=text), stack_name="t")
    source = template.translated_resources("AWS::Lambda::Permission")["EchoFnFilesPermission"]["SourceArn"]
    assert source.endswith("/GET/files/{path+}")
    client = Client(Gateway(template, log=io.StringIO()))
    assert client.get("/files/a/b", headers={"X-Key": "k"}).status_code == 500


def test_an_authorizer_invoke_role_must_trust_api_gateway_and_allow_the_invoke(tmp_path: Path) -> None:
    role = """
  InvokeRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal:
              Service: {service}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: invoke
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: lambda:InvokeFunction
                Resource: {resource}
"""
    base = TEMPLATE.replace(
        "            EnableFunctionDefaultPermissions: true\n",
        "            FunctionInvokeRole: !GetAtt InvokeRole.Arn\n",
    )
    cases = {
        ("apigateway.amazonaws.com", "!GetAtt AuthFn.Arn"): 200,
        ("apigateway.amazonaws.com", "!GetAtt EchoFn.Arn"): 500,  # allows another function only
        ("lambda.amazonaws.com", "!GetAtt AuthFn.Arn"): 500,  # API Gateway cannot assume it
    }
    for index, ((service, resource), status) in enumerate(cases.items()):
        root = tmp_path / str(index)
        text = base.replace(
            "Resources:\n", "Resources:\n" + role.format(service=service, resource=resource), 1
        )
        client = Client(
            Gateway(load_template(write_project(root, template=text), stack_name="t"), log=io.StringIO())
        )
        assert client.get("/items/1", headers={"X-Key": "alice"}).status_code == status, (service, resource)


# -- responses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("list", [1, "two"]), ("dict", {"hello": "world", "n": 1.5}), ("string", "plain")],
)
def test_values_without_status_code_become_200_json(client: Client, kind: str, expected: Any) -> None:
    response = client.get(f"/value/{kind}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.get_data(as_text=True)) == expected


def test_status_code_responses_keep_headers_cookies_and_binary_bodies(client: Client) -> None:
    response = client.get("/value/binary")
    assert response.status_code == 201
    assert response.headers["X-One"] == "1"
    assert response.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert response.get_data() == b"\x00\x01\x02"
    assert response.headers["apigw-requestid"]
    empty = client.get("/value/nobody")
    assert empty.status_code == 204 and empty.get_data() == b""


@pytest.mark.parametrize("path", ["/value/badbody", "/value/unserialisable", "/value/explode"])
def test_malformed_responses_and_handler_exceptions_are_500(
    client: Client, log: io.StringIO, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 500
    assert response.get_json() == {"message": "Internal Server Error"}
    assert "ValueFn" in log.getvalue()


def test_handler_exception_is_500_with_the_traceback_logged(client: Client, log: io.StringIO) -> None:
    response = client.get("/boom", headers={"X-Key": "k"})
    assert response.status_code == 500
    assert response.get_json() == {"message": "Internal Server Error"}
    assert "Traceback" in log.getvalue() and "KeyError: 'boom'" in log.getvalue()


def test_invoke_function_returns_the_marshalled_result(gateway: Gateway) -> None:
    assert gateway.invoke_function("ValueFn", {"pathParameters": {"kind": "dict"}}) == {
        "hello": "world",
        "n": 1.5,
    }
    with pytest.raises(KeyError):
        gateway.invoke_function("BoomFn", {})


# -- environment -----------------------------------------------------------------------------------


def test_required_environment_is_the_union(gateway: Gateway) -> None:
    assert gateway.required_environment() == {"SHARED": "one", "ECHO_ONLY": "1"}


def test_conflicting_environments_are_refused(tmp_path: Path) -> None:
    conflicting = TEMPLATE.replace('ECHO_ONLY: "1"', "SHARED: two")
    with pytest.raises(GatewayConfigError, match="SHARED"):
        Gateway(load_template(write_project(tmp_path, template=conflicting)))


# -- local.invoke ----------------------------------------------------------------------------------


@pytest.fixture
def stack_state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    aws_env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    state = {
        "parameter_overrides": {},
        "aws_env": aws_env,
        "stack_name": "st",
        "gateway_url": "",
        "graph_url": "",
    }
    (state_dir / "stack.json").write_text(json.dumps(state))
    return state_dir


ENV_HANDLER = """
import os

def handler(event, context):
    print("function output goes to stderr")
    return {k: os.environ.get(k) for k in event["keys"]}
"""


def test_invoke_cli_prints_the_result_on_stdout_and_lambda_logs_on_stderr(
    tmp_path: Path, stack_state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    template_path = write_project(tmp_path)
    (tmp_path / "echo" / "app.py").write_text(ENV_HANDLER)
    keys = [
        "SHARED",
        "ECHO_ONLY",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_LAMBDA_FUNCTION_NAME",
        "PARENT_SECRET",
    ]
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({"keys": keys}))
    monkeypatch.setenv("PARENT_SECRET", "must-not-leak")
    before = dict(os.environ)

    code = local_invoke.main(
        ["EchoFn", "-e", str(event_file), "--state-dir", str(stack_state), "-t", str(template_path)]
    )

    out, err = capsys.readouterr()
    assert code == 0
    assert out.count("\n") == 1  # exactly one line of JSON
    assert json.loads(out) == {
        "SHARED": "one",
        "ECHO_ONLY": "1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_REGION": "eu-west-1",
        "AWS_LAMBDA_FUNCTION_NAME": "st-EchoFn",
        "PARENT_SECRET": None,
    }
    assert "START RequestId: " in err and "Version: $LATEST" in err
    assert "END RequestId: " in err
    assert "Billed Duration: " in err and "Memory Size: 128 MB" in err and "Max Memory Used: " in err
    assert "function output goes to stderr" in err
    assert dict(os.environ) == before  # a direct call leaves the process as it found it


def test_invoke_cli_reports_handler_errors_like_lambda(
    tmp_path: Path, stack_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template_path = write_project(tmp_path)
    event_file = tmp_path / "event.json"
    event_file.write_text("{}")
    code = local_invoke.main(
        ["BoomFn", "-e", str(event_file), "--state-dir", str(stack_state), "-t", str(template_path)]
    )
    out, err = capsys.readouterr()
    assert code == 1
    payload = json.loads(out)
    assert payload["errorType"] == "KeyError"
    assert payload["errorMessage"] == "'boom'"
    assert payload["requestId"] in err
    assert any("raise KeyError" in frame for frame in payload["stackTrace"])


def test_invoke_without_a_running_stack_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = local_invoke.main(["EchoFn", "--state-dir", str(tmp_path / "nothing")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "make dev" in err and err.count("\n") == 1


def test_invoke_function_api_returns_the_value_or_raises(tmp_path: Path, stack_state: Path) -> None:
    template_path = write_project(tmp_path)
    log = io.StringIO()
    result = local_invoke.invoke(
        "ValueFn",
        {"pathParameters": {"kind": "list"}},
        state_dir=stack_state,
        template_path=template_path,
        log=log,
    )
    assert result == [1, "two"]
    with pytest.raises(local_invoke.InvocationError) as info:
        local_invoke.invoke("BoomFn", {}, state_dir=stack_state, template_path=template_path, log=log)
    assert info.value.payload["errorType"] == "KeyError"
    with pytest.raises(local_invoke.StackNotRunning):
        local_invoke.invoke("BoomFn", {}, state_dir=tmp_path / "none", template_path=template_path)


# -- time limits -------------------------------------------------------------------------------------

TIMED_TEMPLATE = """\
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Timeout: 5
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  NapFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: nap/
      Events:
        Nap: {Type: HttpApi, Properties: {ApiId: !Ref Api, Path: "/nap/{seconds}", Method: GET}}
  SlowFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: slow/
      Timeout: 60
      Events:
        Slow: {Type: HttpApi, Properties: {ApiId: !Ref Api, Path: "/slow/{seconds}", Method: GET}}
  GateFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: gate/
      Events:
        Gate: {Type: HttpApi, Properties: {ApiId: !Ref Api, Path: /gate, Method: GET}}
  SpinFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: spin/
      Timeout: 1
      Events:
        Spin: {Type: HttpApi, Properties: {ApiId: !Ref Api, Path: /spin, Method: GET}}
"""

# Sleeps through calbot's one time source (virtual when a test installs a virtual clock) and reports
# what its context said before and after.
_SLEEPER = """
    import json

    from calbot import timeutil

    DONE = []

    def handler(event, context):
        before = context.get_remaining_time_in_millis()
        timeutil.sleep(float(event["pathParameters"]["seconds"]))
        after = context.get_remaining_time_in_millis()
        DONE.append(after)
        return {"statusCode": 200, "body": json.dumps({"before": before, "after": after})}
"""

TIMED_HANDLERS = {
    "nap": _SLEEPER,
    "slow": _SLEEPER,
    # Reports its remaining time, waits until the test lets it go, and reports it again.
    "gate": """
        import json
        import threading

        STARTED = threading.Event()
        GO = threading.Event()

        def handler(event, context):
            before = context.get_remaining_time_in_millis()
            STARTED.set()
            GO.wait(10)
            after = context.get_remaining_time_in_millis()
            return {"statusCode": 200, "body": json.dumps({"before": before, "after": after})}
    """,
    # Runs in small real steps until something stops it; records how far it got.
    "spin": """
        import time

        STEPS = []
        FINISHED = []

        def handler(event, context):
            for _ in range(1000):
                STEPS.append(1)
                time.sleep(0.01)
            FINISHED.append(True)
            return {"statusCode": 200, "body": "{}"}
    """,
}


class VirtualClock:
    """Real time plus an offset that only sleeps and advances move, like the stack's virtual clock."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.advanced = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def sleep(self, seconds: float) -> None:
        self.offset += seconds
        local_invoke.record_virtual_sleep(seconds)

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.advanced += seconds

    def advanced_seconds(self) -> float:
        return self.advanced


@pytest.fixture
def virtual_clock(background_off: None) -> Iterator[VirtualClock]:
    from calbot import timeutil

    clock = VirtualClock()
    timeutil.set_clock(clock.now, clock.sleep)
    try:
        yield clock
    finally:
        timeutil.set_clock()


@pytest.fixture
def timed_gateway(tmp_path: Path, log: io.StringIO, virtual_clock: VirtualClock) -> Gateway:
    for name, code in TIMED_HANDLERS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(textwrap.dedent(code))
    (tmp_path / "template.yaml").write_text(TIMED_TEMPLATE)
    gateway = Gateway(load_template(tmp_path / "template.yaml", stack_name="t"), log=log)
    gateway.use_clock(virtual_clock)
    return gateway


def _module(gateway: Gateway, logical_id: str) -> Any:
    return sys.modules[gateway.handler(logical_id).__module__]


def test_context_has_the_template_timeout_and_counts_virtual_time(timed_gateway: Gateway) -> None:
    answer = Client(timed_gateway).get("/nap/2")
    assert answer.status_code == 200
    times = answer.get_json()
    assert 4500 < times["before"] <= 5000  # the function's Timeout: 5 s
    # A virtual sleep of 2 s took no real time, and still 2 s of the Timeout are gone.
    assert 2500 < times["after"] <= 3000
    assert timed_gateway.overruns() == []


def test_the_remaining_time_drops_when_the_clock_is_advanced_during_the_invocation(
    timed_gateway: Gateway, virtual_clock: VirtualClock
) -> None:
    gate = _module(timed_gateway, "GateFn")
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(Client(timed_gateway).get("/gate")))
    caller.start()
    assert gate.STARTED.wait(10)
    virtual_clock.advance(3)  # POST /_local/clock/advance {"seconds": 3} from elsewhere
    gate.GO.set()
    caller.join(10)
    times = answers[0].get_json()
    assert 4500 < times["before"] <= 5000 and times["before"] - times["after"] >= 3000


def test_another_invocations_virtual_sleep_does_not_eat_this_ones_time(
    timed_gateway: Gateway, virtual_clock: VirtualClock
) -> None:
    gate = _module(timed_gateway, "GateFn")
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(Client(timed_gateway).get("/gate")))
    caller.start()
    assert gate.STARTED.wait(10)
    # Meanwhile another invocation sleeps 4 s of virtual time (a Retry-After): that took it no real
    # time, and the gated one, running alongside, has lost none of its own.
    assert Client(timed_gateway).get("/nap/4").status_code == 200
    gate.GO.set()
    caller.join(10)
    assert answers[0].status_code == 200
    times = answers[0].get_json()
    assert times["before"] - times["after"] < 1000
    assert timed_gateway.overruns() == []


def test_a_function_past_its_timeout_is_killed_and_its_result_discarded(
    timed_gateway: Gateway, log: io.StringIO
) -> None:
    answer = Client(timed_gateway).get("/nap/6")  # returns after 6 s of virtual time; Timeout 5
    # Lambda reports the timeout as a function error: the HTTP API answers 500, whatever it returned.
    assert answer.status_code == 500
    assert answer.get_json() == {"message": "Internal Server Error"}
    [overrun] = timed_gateway.overruns()
    assert (overrun["function"], overrun["kind"], overrun["limit_s"]) == ("NapFn", "timeout", 5.0)
    assert overrun["elapsed_s"] >= 6.0
    assert "OVERRUN NapFn" in log.getvalue()


def test_a_route_past_30_seconds_answers_503_like_the_http_api(timed_gateway: Gateway) -> None:
    answer = Client(timed_gateway).get("/slow/31")  # Timeout 60: the function itself may go on
    assert answer.status_code == 503
    assert answer.get_json() == {"message": "Service Unavailable"}
    assert [(o["function"], o["kind"], o["limit_s"]) for o in timed_gateway.overruns()] == [
        ("SlowFn", "integration_timeout", 30.0)
    ]


def test_a_timed_out_invocation_raises_sandbox_timedout_for_the_clock(timed_gateway: Gateway) -> None:
    # The clock's path (no integration limit): a failed invocation it retries like Lambda's async retries.
    with pytest.raises(local_invoke.InvocationError) as info:
        timed_gateway.invoke_function("NapFn", {"pathParameters": {"seconds": "7"}})
    assert info.value.payload["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 5.00 seconds" in info.value.payload["errorMessage"]


def test_a_handler_still_running_at_its_timeout_is_stopped(timed_gateway: Gateway) -> None:
    # Real time this once: the handler would run ~10 s; its Timeout is 1 s.
    answer = Client(timed_gateway).get("/spin")
    assert answer.status_code == 500
    module = _module(timed_gateway, "SpinFn")
    steps = len(module.STEPS)
    threading.Event().wait(0.3)
    assert len(module.STEPS) <= steps + 1  # killed: it does not keep on working in the background
    assert module.FINISHED == []
    assert [o["kind"] for o in timed_gateway.overruns()] == ["timeout"]


def test_overrun_failure_flags_any_recorded_overrun(timed_gateway: Gateway) -> None:
    assert overrun_failure(timed_gateway.overruns()) is None
    Client(timed_gateway).get("/nap/6")
    failure = overrun_failure(timed_gateway.overruns())
    assert failure is not None
    assert "NapFn: timeout after 6." in failure and "(limit 5.0 s)" in failure
