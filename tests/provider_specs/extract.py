"""Regenerate the spec extracts in this folder from the providers' published descriptions.

    python tests/provider_specs/extract.py SENDGRID_OAI RESEND_OPENAPI MAILGUN_MCP APIS_GURU SENDINBLUE_GO BOTOCORE

Each argument is a checkout of the source repository named in README.md. Only the sending
operations are kept, with every definition they reference (the transitive closure), copied
verbatim; SendGrid's multi-file spec is bundled into one document by rewriting its relative
``$ref``s to local ones. Nothing else is changed. The tests never run this script.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent


def refs(node: Any) -> set[str]:
    """Every ``$ref`` string under ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def closure(doc: dict, roots: Any) -> dict[str, Any]:
    """The local ``#/a/b`` targets reachable from ``roots``, by pointer."""
    todo, seen = list(refs(roots)), {}
    while todo:
        ref = todo.pop()
        if ref in seen or not ref.startswith("#/"):
            continue
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        seen[ref] = node
        todo.extend(refs(node))
    return seen


def place(out: dict, found: dict[str, Any]) -> dict:
    for ref, node in found.items():
        target = out
        parts = ref[2:].split("/")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = node
    return out


def openapi_subset(doc: dict, paths: list[str], keep: tuple[str, ...] = ("openapi", "info", "servers", "security")) -> dict:
    out = {k: doc[k] for k in keep if k in doc}
    out["paths"] = {p: doc["paths"][p] for p in paths}
    place(out, closure(doc, out["paths"]))
    if "security" in doc or any("security" in op for item in out["paths"].values() for op in item.values()
                                if isinstance(op, dict)):
        out.setdefault("components", {})["securitySchemes"] = doc["components"]["securitySchemes"]
    return out


def sendgrid(root: Path) -> dict:
    """Bundle ``oas_v3.json``'s /v3/mail/send with the component files it points into."""
    top = json.loads((root / "oas_v3.json").read_text())
    components = {name: json.loads((root / "spec/components" / f"{name}.json").read_text())
                  for name in ("schemas", "responses", "securitySchemes", "parameters", "requestBodies")}
    operation = json.loads((root / "spec/paths/mail_send/mail_send.json").read_text())["mail_send"]
    text = json.dumps(operation)
    # ../../components/schemas.json#/x (from a path file) and ./schemas.json#/x (within components)
    pattern = re.compile(r'"(?:\.\./\.\./components/|\./)(\w+)\.json#/([^"]+)"')
    doc = {"openapi": top["openapi"], "info": top["info"], "servers": top["servers"],
           "paths": {"/v3/mail/send": json.loads(pattern.sub(r'"#/components/\1/\2"', text))},
           "components": {name: json.loads(pattern.sub(r'"#/components/\1/\2"', json.dumps(value)))
                          for name, value in components.items()}}
    return openapi_subset(doc, ["/v3/mail/send"])


def swagger_subset(doc: dict, paths: list[str]) -> dict:
    keep = ("swagger", "info", "host", "basePath", "schemes", "consumes", "produces", "security",
            "securityDefinitions")
    out = {k: doc[k] for k in keep if k in doc}
    out["paths"] = {p: doc["paths"][p] for p in paths}
    return place(out, closure(doc, out["paths"]))


def sesv2(root: Path) -> dict:
    model = json.loads((root / "botocore/data/sesv2/2019-09-27/service-2.json").read_text())
    shapes, todo = {}, ["SendEmailRequest", "SendEmailResponse"]
    while todo:
        name = todo.pop()
        if name in shapes:
            continue
        shapes[name] = shape = model["shapes"][name]
        todo += [m["shape"] for m in shape.get("members", {}).values()]
        todo += [shape[k]["shape"] for k in ("member", "key", "value") if k in shape]
    todo = list(model["operations"]["SendEmail"].get("errors", []))
    for error in todo:
        shapes[error["shape"]] = model["shapes"][error["shape"]]
    return {"version": model["version"], "metadata": model["metadata"],
            "operations": {"SendEmail": model["operations"]["SendEmail"]}, "shapes": shapes}


def main(sendgrid_root: str, resend_root: str, mailgun_root: str, guru_root: str, brevo_root: str,
         botocore_root: str) -> None:
    write = lambda name, doc: (HERE / name).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    write("sendgrid-mail-send.json", sendgrid(Path(sendgrid_root)))
    resend = yaml.safe_load((Path(resend_root) / "resend.yaml").read_text())
    write("resend-emails.json", openapi_subset(resend, ["/emails/batch"]))
    mailgun = yaml.safe_load((Path(mailgun_root) / "src/openapi.yaml").read_text())
    write("mailgun-messages.json", openapi_subset(mailgun, ["/v3/{domain_name}/messages",
                                                             "/v3/{domain_name}/messages.mime"]))
    postmark = yaml.safe_load((Path(guru_root) / "APIs/postmarkapp.com/server/1.0.0/swagger.yaml").read_text())
    write("postmark-email.json", swagger_subset(postmark, ["/email/batch"]))
    brevo = yaml.safe_load((Path(brevo_root) / "api/swagger.yaml").read_text())
    write("brevo-smtp-email.json", swagger_subset(brevo, ["/smtp/email"]))
    write("sesv2-send-email.json", sesv2(Path(botocore_root)))


if __name__ == "__main__":
    main(*sys.argv[1:])
