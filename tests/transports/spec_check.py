"""Check a request as a provider's own published API description would (tests/provider_specs/).

The request is checked as the server received it (a :class:`~tests.transports.conftest.Recorded`),
so what is validated is the bytes on the wire: method, path, content type, required and
security headers, and the body against the request schema.

* OpenAPI 3 descriptions (SendGrid, Resend, Mailgun): ``openapi-core`` validates the whole
  request, multipart bodies included.
* Swagger 2.0 descriptions (Postmark, Brevo), which ``openapi-core`` does not read: the
  operation is looked up by ``basePath`` + path and method, ``consumes``, required header
  parameters and the apiKey security header are checked, and the body parameter's schema is
  validated by ``jsonschema`` (Draft 4, which Swagger 2.0 schemas are a subset of).
* Amazon SES v2: botocore's own model (``service-2.json``) and botocore's own parameter
  validator, after decoding the JSON body as botocore's rest-json protocol encodes it.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.transports.conftest import Recorded

SPECS = Path(__file__).resolve().parent.parent / "provider_specs"
#: provider -> (file, public base URL the description's servers name)
FILES = {
    "sendgrid": ("sendgrid-mail-send.json", "https://api.sendgrid.com"),
    "resend": ("resend-emails.json", "https://api.resend.com"),
    "mailgun": ("mailgun-messages.json", "https://api.mailgun.net"),
    "postmark": ("postmark-email.json", None),
    "brevo": ("brevo-smtp-email.json", None),
    "ses": ("sesv2-send-email.json", None),
}


class SpecViolation(AssertionError):
    """The request is not one the provider's description allows."""


@lru_cache(maxsize=None)
def _document(provider: str) -> dict[str, Any]:
    return json.loads((SPECS / FILES[provider][0]).read_text())


def check(provider: str, req: "Recorded") -> None:
    """Raise :class:`SpecViolation` unless ``req`` is valid for ``provider``'s description."""
    if provider == "ses":
        _check_ses(req)
    elif "swagger" in _document(provider):
        _check_swagger(_document(provider), req)
    else:
        _check_openapi(provider, req)


def check_received(provider: str, received: list[tuple[str, str, list[tuple[str, str]], bytes]]) -> int:
    """Check every request a :class:`~tests.provider_emulator.ProviderEmulator` recorded; their number."""
    for raw in received:
        check(provider, recorded(raw))
    return len(received)


def recorded(raw: tuple[str, str, list[tuple[str, str]], bytes]) -> "Recorded":
    """An emulator's (method, path, headers, body) as the tests' :class:`Recorded`."""
    from email.message import Message

    from tests.transports.conftest import Recorded

    method, path, items, body = raw
    headers = Message()
    for name, value in items:
        headers[name] = value
    return Recorded(method, path, headers, body)


@lru_cache(maxsize=None)
def _openapi(provider: str):
    from openapi_core import Config, OpenAPI, V30RequestValidator

    config = None
    if provider == "mailgun":
        # Mailgun's 3.1 description types its file parts as ``string`` + ``format: binary`` (the 3.0
        # idiom); openapi-core's 3.1 validator reads a file part as bytes and refuses it as not a
        # string, while its 3.0 validator accepts bytes for ``format: binary``. The schemas here
        # use nothing that differs between the two (types, enums, arrays).
        config = Config(request_validator_cls=V30RequestValidator)
    return OpenAPI.from_dict(_document(provider), config=config)


def _check_openapi(provider: str, req: "Recorded") -> None:
    import requests
    from openapi_core.contrib.requests import RequestsOpenAPIRequest

    headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "content-length")}
    prepared = requests.Request(req.method, FILES[provider][1] + req.path, headers=headers,
                                data=req.body).prepare()
    try:
        _openapi(provider).validate_request(RequestsOpenAPIRequest(prepared))
    except Exception as exc:  # noqa: BLE001  openapi-core raises a family of errors
        cause = exc.__cause__ or exc.__context__
        raise SpecViolation(f"{provider}: {type(exc).__name__}: {exc} {cause or ''}"[:2000]) from exc


def _check_swagger(doc: dict[str, Any], req: "Recorded") -> None:
    import jsonschema

    base = doc.get("basePath", "/").rstrip("/")
    path = req.path.split("?")[0]
    operation = next((item.get(req.method.lower()) for p, item in doc["paths"].items() if base + p == path), None)
    if operation is None:
        raise SpecViolation(f"{req.method} {path} is not an operation of {doc['info']['title']}")
    content_type = req.headers.get_content_type()
    if content_type not in operation.get("consumes", doc.get("consumes", [])):
        raise SpecViolation(f"Content-Type {content_type} is not declared for {path}")
    for param in operation.get("parameters", []):
        if param["in"] == "header" and param.get("required") and req.headers.get(param["name"]) is None:
            raise SpecViolation(f"required header {param['name']} is missing")
    requirements = operation.get("security", doc.get("security", []))
    if requirements and not any(all(_authenticates(doc["securityDefinitions"][scheme], req) for scheme in requirement)
                                for requirement in requirements):  # any one requirement, all of its schemes
        raise SpecViolation(f"no security requirement is met: {requirements}")
    body = next((p for p in operation.get("parameters", []) if p["in"] == "body"), None)
    if body is not None:
        schema = {"definitions": doc.get("definitions", {}), **body["schema"]}
        try:
            jsonschema.Draft4Validator(schema).validate(json.loads(req.body))
        except jsonschema.ValidationError as exc:
            raise SpecViolation(f"body: {exc.message} at {list(exc.absolute_path)}") from exc


def _authenticates(definition: dict[str, Any], req: "Recorded") -> bool:
    if definition["type"] == "apiKey" and definition["in"] == "header":
        return bool(req.headers.get(definition["name"]))
    if definition["type"] == "basic":
        return str(req.headers.get("Authorization", "")).startswith("Basic ")
    return False


@lru_cache(maxsize=None)
def _ses_operation():
    from botocore.model import ServiceModel

    return ServiceModel(_document("ses"), service_name="sesv2").operation_model("SendEmail")


def _check_ses(req: "Recorded") -> None:
    from botocore.validate import ParamValidator

    operation = _ses_operation()
    http = operation.http
    if req.method != http["method"] or req.path.split("?")[0] != http["requestUri"]:
        raise SpecViolation(f"{req.method} {req.path} is not {http['method']} {http['requestUri']}")
    if req.headers.get_content_type() != "application/json":
        raise SpecViolation(f"rest-json body sent as {req.headers.get_content_type()}")
    if not str(req.headers.get("Authorization", "")).startswith("AWS4-HMAC-SHA256 "):
        raise SpecViolation("not signed with SigV4 (model signatureVersion "
                            f"{operation.service_model.signature_version})")
    params = _from_rest_json(json.loads(req.body), operation.input_shape)
    report = ParamValidator().validate(params, operation.input_shape)
    if report.has_errors():
        raise SpecViolation(report.generate_report())


def _from_rest_json(value: Any, shape: Any) -> Any:
    """The parameters botocore would have been given for this JSON body: blobs are base64
    text in rest-json, bytes to the validator. An unknown member is kept, for the validator to refuse."""
    if shape.type_name == "structure" and isinstance(value, dict):
        return {k: _from_rest_json(v, shape.members[k]) if k in shape.members else v for k, v in value.items()}
    if shape.type_name == "list" and isinstance(value, list):
        return [_from_rest_json(v, shape.member) for v in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: _from_rest_json(v, shape.value) for k, v in value.items()}
    if shape.type_name == "blob" and isinstance(value, str):
        return base64.b64decode(value, validate=True)
    return value
