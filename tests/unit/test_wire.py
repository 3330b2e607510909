"""The wire format (backburner's JSON envelope) and tube-name expansion.

Pure functions: no server. The envelope is ``{"class": NAME, "args": [...]}``
in UTF-8 JSON, and decoding it must never import or run anything.
"""
from __future__ import annotations

import json
import sys

import pytest

from workers import wire
from workers.wire import PayloadError, TubeNameError, check_tube, decode, encode, tube_name

NS = "backburner.worker.queue"


# -- encode -----------------------------------------------------------------

def test_encode_is_backburner_envelope_in_compact_utf8_json() -> None:
    body = encode("NewsletterJob", ["a@b.c", 1, None, {"k": "v"}])
    assert isinstance(body, bytes)
    assert body == b'{"class":"NewsletterJob","args":["a@b.c",1,null,{"k":"v"}]}'


def test_encode_takes_any_sequence_of_args_and_writes_a_list() -> None:
    assert json.loads(encode("J", ("x", 2))) == {"class": "J", "args": ["x", 2]}
    assert json.loads(encode("J", [])) == {"class": "J", "args": []}


def test_encode_non_ascii_round_trips_as_valid_utf8_json() -> None:
    body = encode("J", ["héllo ✓", "日本"])
    body.decode("utf-8")  # valid UTF-8
    assert json.loads(body)["args"] == ["héllo ✓", "日本"]
    assert decode(body) == ("J", ["héllo ✓", "日本"])


@pytest.mark.parametrize("arg", [object(), {1, 2}, b"bytes"], ids=["object", "set", "bytes"])
def test_encode_rejects_arguments_that_are_not_json_data(arg: object) -> None:
    with pytest.raises(TypeError, match="JSON"):
        encode("J", [arg])


@pytest.mark.parametrize("arg", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_encode_rejects_nan_and_infinity_which_ruby_cannot_parse(arg: float) -> None:
    with pytest.raises(TypeError, match="JSON"):
        encode("J", [arg])


# -- decode -----------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    (b'{"class":"NewsletterJob","args":["a@b.c",1,null,{"k":"v"}]}',
     ("NewsletterJob", ["a@b.c", 1, None, {"k": "v"}])),
    (b'{"class": "A", "args": []}', ("A", [])),
    (b'{"class":"A","args":null}', ("A", [])),   # backburner sends null for no args
    (b'{"class":"A"}', ("A", [])),
    (b'{"args":[1],"class":"A","queue":"ignored"}', ("A", [1])),
    ('{"class":"Ünï","args":["✓"]}'.encode(), ("Ünï", ["✓"])),
], ids=["ruby", "spaces", "null-args", "no-args", "extra-keys", "utf8"])
def test_decode_accepts_backburner_bodies(body: bytes, expected: tuple[str, list[object]]) -> None:
    assert decode(body) == expected


def test_decode_round_trips_encode() -> None:
    args = ["x", 1, 2.5, None, True, {"a": [1, {"b": None}]}]
    assert decode(encode("some.module.job", args)) == ("some.module.job", args)


@pytest.mark.parametrize("body, reason", [
    (b"not json", "not JSON"),
    (b"", "not JSON"),
    (b"[]", "not an object"),
    (b'"str"', "not an object"),
    (b"5", "not an object"),
    (b"{}", "no \"class\""),
    (b'{"class": 5}', "no \"class\""),
    (b'{"class": ""}', "no \"class\""),
    (b'{"class": null, "args": []}', "no \"class\""),
    (b'{"args": []}', "no \"class\""),
    (b'{"class": "A", "args": "oops"}', "not an array"),
    (b'{"class": "A", "args": {"k": 1}}', "not an array"),
    (b'\xff\xfe{"class": "A"}', "not UTF-8"),
    (b'{"class": "\xc3\x28"}', "not UTF-8"),
], ids=["text", "empty", "list", "string", "number", "empty-object", "class-int",
        "class-empty", "class-null", "no-class", "args-str", "args-object",
        "bad-utf8-lead", "bad-utf8-inner"])
def test_decode_rejects_bad_bodies_with_a_one_line_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode(body)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize("depth", [100_000])
def test_decode_deeply_nested_json_is_a_payload_error_not_a_crash(depth: int) -> None:
    with pytest.raises(PayloadError, match="nested"):
        decode(b"[" * depth + b"]" * depth)
    with pytest.raises(PayloadError, match="nested"):
        decode(b'{"class":"A","args":' + b"[" * depth + b"]" * depth + b"}")


def test_decode_never_imports_what_the_payload_names() -> None:
    # Given a module that nothing here has imported
    name = "tabnanny"
    if name in sys.modules:
        pytest.skip(f"{name} is already imported in this process")
    # When bodies name it (and a dangerous callable)
    assert decode(b'{"class":"tabnanny.check","args":["/"]}') == ("tabnanny.check", ["/"])
    assert decode(b'{"class":"os.system","args":["touch /nonexistent/owned"]}') == \
        ("os.system", ["touch /nonexistent/owned"])
    # Then decoding returned plain data and imported nothing
    assert name not in sys.modules


# -- tube names ---------------------------------------------------------------

@pytest.mark.parametrize("queue, tube", [
    ("newsletter-sender", f"{NS}.newsletter-sender"),
    ("send_mail", f"{NS}.send-mail"),
    ("SendMail", f"{NS}.send-mail"),
    ("sendMail", f"{NS}.send-mail"),
    ("HTTPRequest", f"{NS}.http-request"),
    ("ParseHTTPRequest", f"{NS}.parse-http-request"),
    ("Foo::BarBaz", f"{NS}.foo/bar-baz"),
    ("jobs2", f"{NS}.jobs2"),
    # the namespace prefix is not doubled
    (f"{NS}.mail", f"{NS}.mail"),
    (f"{NS}.SendMail", f"{NS}.send-mail"),
    # runs of the separator collapse to one
    ("a..b", f"{NS}.a.b"),
    (".mail", f"{NS}.mail"),
    ("a...b..c", f"{NS}.a.b.c"),
], ids=lambda v: v if len(v) < 40 else "")
def test_tube_name_expands_like_backburner(queue: str, tube: str) -> None:
    assert tube_name(queue) == tube


@pytest.mark.parametrize("queue, namespace, separator, tube", [
    ("mail", "myapp", ".", "myapp.mail"),
    ("mail", "myapp.", ".", "myapp.mail"),         # backburner strips a trailing '.'
    ("mail", "myapp", "/", "myapp/mail"),
    ("//mail", "myapp", "/", "myapp/mail"),
    ("myapp/mail", "myapp", "/", "myapp/mail"),
    ("SendMail", "", ".", "send-mail"),
], ids=["plain", "trailing-dot", "slash", "slash-run", "slash-no-double", "no-namespace"])
def test_tube_name_with_other_namespace_and_separator(queue: str, namespace: str,
                                                      separator: str, tube: str) -> None:
    assert tube_name(queue, namespace, separator) == tube


def test_tube_name_of_exactly_200_bytes_is_accepted() -> None:
    queue = "x" * (200 - len(NS) - 1)
    assert len(tube_name(queue)) == 200


@pytest.mark.parametrize("queue, namespace, why", [
    ("x" * (200 - len(NS)), NS, "200"),               # 201 bytes in all
    ("x" * 300, NS, "200"),
    ("a b", NS, "characters"),
    ("mail!", NS, "characters"),
    ("caf\u00e9", NS, "characters"),                  # non-ASCII
    ("a*b", NS, "characters"),
    ("-mail", "", "'-'"),                             # the whole tube starts with '-'
    ("mail", "-ns", "'-'"),
    ("mail:3:garbage", NS, "':'"),                    # backburner's CLI syntax, not a name
    ("a:b", NS, "':'"),
    ("", NS, "empty"),
], ids=["201-bytes", "300-bytes", "space", "bang", "non-ascii", "star",
        "leading-dash", "namespace-dash", "colon-cli", "colon", "empty"])
def test_tube_name_that_beanstalkd_rejects_is_a_clear_error(queue: str, namespace: str,
                                                            why: str) -> None:
    with pytest.raises(TubeNameError) as info:
        tube_name(queue, namespace)
    assert why in str(info.value)
    assert isinstance(info.value, ValueError)


def test_leading_dash_in_a_queue_is_fine_behind_the_namespace() -> None:
    # beanstalkd only refuses a *tube* that starts with '-'.
    assert tube_name("-mail") == f"{NS}.-mail"


@pytest.mark.parametrize("tube", ["a", "A-Za-z0-9+/;.$_()", "x" * 200, "a-"])
def test_check_tube_accepts_every_character_beanstalkd_allows(tube: str) -> None:
    check_tube(tube)


@pytest.mark.parametrize("tube", ["-a", "a:b", "x" * 201, "a\tb", "a\nb", "a#b", ""],
                         ids=["dash", "colon", "201", "tab", "newline", "hash", "empty"])
def test_check_tube_rejects_what_beanstalkd_rejects(tube: str) -> None:
    with pytest.raises(TubeNameError):
        check_tube(tube)


def test_max_tube_bytes_is_beanstalkds_limit() -> None:
    assert wire.MAX_TUBE_BYTES == 200


def test_encode_writes_plain_utf8_and_refuses_lone_surrogates() -> None:
    # Like Ruby's to_json: non-ASCII text as UTF-8, not \\u escapes
    assert wire.encode("x", ["é"]) == '{"class":"x","args":["é"]}'.encode()
    # A lone surrogate has no UTF-8 form and Ruby cannot read it
    with pytest.raises(TypeError, match="JSON data"):
        wire.encode("x", ["\ud800"])
