#!/usr/bin/env python3
"""Writes the seeds of tests/fuzz/corpus/ that come from the recorded vendor
answers (assets/answers): a site list or a token answer as the sites and oauth
harnesses read it, "<kind> VENDOR STATUS CONTENT_TYPE" and the body. Run it
again when recordings are added; the other seeds are written by hand."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parents[2]
corpus = root / "tests" / "fuzz" / "corpus"
TOKEN_FILES = {"token", "refresh", "partner-token", "token-client-credentials", "invalid-grant"}

for path in sorted((root / "assets" / "answers").glob("*/*.json")):
    rec = json.loads(path.read_text())
    vendor, name = path.parent.name, path.stem
    if rec.get("parser") == "check":
        kind, target = "sites", "sites"
    elif name in TOKEN_FILES:
        kind, target = "token", "oauth"
    else:
        continue
    body = rec["body"]
    text = body if isinstance(body, str) else json.dumps(body, indent=1)
    head = "%s %s %d %s\n" % (kind, vendor, rec.get("status", 200),
                              rec.get("headers", {}).get("Content-Type", "-"))
    out = corpus / target / ("%s-%s" % (vendor, name))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + text)
