#!/usr/bin/env python3
"""Checks Kubernetes manifests against the API models of the `kubernetes` Python package.

The package's models (v37+) are pydantic models generated from the Kubernetes OpenAPI schema,
with unknown fields forbidden and strict scalar types, so `model_validate` is a schema check:
an unknown or misspelled field, a wrong type or a missing required field is an error. Every
document of every file given is matched to its model by apiVersion and kind (apps/v1
Deployment -> V1Deployment). Kinds the package does not know (custom resources such as KEDA's
ScaledObject) are reported as skipped, with their content, for the caller to check.
Prints one JSON object: {"checked": [...], "skipped": [...], "errors": [...]}; exit 1 on errors.
"""

import json
import sys

import kubernetes
import kubernetes.client as k8s
import pydantic
import yaml


def model_for(api_version, kind):
    version = api_version.split("/")[-1]
    return getattr(k8s, version[:1].upper() + version[1:] + kind, None)


def main(paths):
    report = {"kubernetes": kubernetes.__version__, "checked": [], "skipped": [], "errors": []}
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            where = f"{path}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            model = model_for(doc.get("apiVersion", ""), doc.get("kind", ""))
            if model is None:
                report["skipped"].append({"where": where, "doc": doc})
                continue
            try:
                model.model_validate(doc)
            except pydantic.ValidationError as e:
                for err in e.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    report["errors"].append(f"{where}: {loc}: {err['msg']}")
            report["checked"].append({"where": where, "model": model.__name__, "doc": doc})
    print(json.dumps(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
