"""Validate Kubernetes objects offline; used by tests/tests/e2e/k8s.rs.

Reads YAML documents on stdin (`kubectl kustomize DIR`), checks each one and prints them
all as one JSON array on stdout. Built-in kinds are checked by kubernetes-validate against
the Kubernetes OpenAPI schemas it ships, strict (unknown fields are errors). KEDA's
ScaledObject is a custom resource those schemas do not have: it is parsed by the models
cloudcoil-models-keda generates from KEDA's CRDs, and any field those models do not know
is an error too. Any other kind fails. Exit 1, naming each object and its error on
stderr, when one fails.

usage: python k8s_validate.py KUBERNETES_VERSION < objects.yaml
"""

import json
import sys

import kubernetes_validate
import yaml
from cloudcoil.models.keda import v1alpha1 as keda

CUSTOM = {("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject}


def unknown_fields(given, parsed, path=""):
    """Paths of keys in `given` that `parsed` (the model's dump of it) dropped."""
    if isinstance(given, dict) and isinstance(parsed, dict):
        for key, value in given.items():
            if key not in parsed:
                yield f"{path}.{key}" if path else key
            else:
                yield from unknown_fields(value, parsed[key], f"{path}.{key}" if path else key)
    elif isinstance(given, list) and isinstance(parsed, list):
        for i, (a, b) in enumerate(zip(given, parsed)):
            yield from unknown_fields(a, b, f"{path}[{i}]")


def check_custom(obj, model):
    parsed = model.model_validate(obj).model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = list(unknown_fields(obj, parsed))
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}")


def main():
    version = sys.argv[1]
    objects = [o for o in yaml.safe_load_all(sys.stdin) if o is not None]
    failed = []
    for obj in objects:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        model = CUSTOM.get((obj.get("apiVersion"), kind))
        try:
            if model is not None:
                check_custom(obj, model)
            else:
                kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            failed.append(f"{kind}/{name}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            failed.append(f"{kind}/{name}: {e.message}")
        except Exception as e:  # pydantic's ValidationError, unknown fields
            failed.append(f"{kind}/{name}: {e}")
    for line in failed:
        print(line, file=sys.stderr)
    if failed:
        sys.exit(1)
    json.dump(objects, sys.stdout)


if __name__ == "__main__":
    main()
