"""Unit: bearer tokens (api/auth.py): which tokens a setting allows and how a header is judged."""

import pytest

from api.auth import bearer, check, tokens_of
from api.problems import Kind, ServiceError


def test_a_setting_lists_tokens_separated_by_commas():
    assert tokens_of(None) == tokens_of("") == tokens_of(" , ") == ()
    assert tokens_of("one") == (b"one",)
    assert tokens_of(" one, two ,three ") == (b"one", b"two", b"three")


def test_no_tokens_no_check():
    assert check((), None, "GET /metrics") is None
    assert check((), "Bearer anything", "GET /metrics") is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic b25lOg==", "one"])
def test_without_a_bearer_token_it_is_unauthorized(header):
    with pytest.raises(ServiceError) as refused:
        check((b"one",), header, "POST /feedback")
    assert refused.value.kind is Kind.UNAUTHORIZED
    assert refused.value.message == (
        "POST /feedback needs a bearer token: send 'Authorization: Bearer <token>'"
    )


@pytest.mark.parametrize("header", ["Bearer on", "Bearer one1", "Bearer ONE", "Bearer two,one"])
def test_a_token_not_listed_is_forbidden(header):
    with pytest.raises(ServiceError) as refused:
        check((b"one", b"two"), header, "GET /metrics")
    assert refused.value.kind is Kind.FORBIDDEN
    assert refused.value.message == "the bearer token given is not allowed for GET /metrics"


# header values arrive as their bytes decoded as latin-1 (ASGI servers, Starlette)
UTF8_TOKEN = "Bearer " + "ünï".encode().decode("latin-1")


@pytest.mark.parametrize("header", ["Bearer one", "bearer two", "  BEARER   two  ", UTF8_TOKEN])
def test_any_listed_token_passes(header):
    assert check(tokens_of("one,two,ünï"), header, "GET /metrics") is None


def test_the_bearer_token_is_the_bytes_that_came():
    assert bearer(None) is bearer("") is bearer("Basic x") is bearer("Bearer  ") is None
    assert bearer(" bearer  tok en ") == b"tok en"
    assert bearer(UTF8_TOKEN) == "ünï".encode()
