"""Case builder for manifest mutations: fields deleted, retyped or out of range, paths leaving the bundle, and
manifests that are not JSON at all."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fuzz.common import Case, pick


def _paths(document, prefix=()):
    """Every (path, value) in a JSON document, the 72 bundle names counted once."""
    found = [(prefix, document)]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        items = document if prefix[-1:] != ("bundles",) else document[:1]
        for i, value in enumerate(items):
            found += _paths(value, (*prefix, i))
    return found


def _at(document, path):
    for key in path:
        document = document[key]
    return document


RETYPES = [None, True, 0, -1, 1, 2, 15, 17, 32, 10 ** 9, 1.5, -0.0, "", "16", "../x", "/abs", "a\\b", [], [1],
           ["x"], {}, {"a": 1}, "z" * 64, 1e308]


def build_manifest(rng, d: Path, case: Case) -> str:
    from tests.run_support import copy_bundle

    bundle = copy_bundle(case.bundle, d / "bundle", link_artifact=True)
    path = bundle / "manifest.json"
    document = json.loads(path.read_text())
    done = []
    op = pick(rng, ["delete", "retype", "retype", "range", "bad-path", "text"])
    if op == "text":
        kind = pick(rng, ["truncated", "garbage", "deep", "empty", "nan-literal", "utf16"])
        text = json.dumps(document)
        content = {"truncated": text[: int(len(text) * rng.uniform(0, 1))].encode(),
                   "garbage": rng.bytes(int(rng.integers(1, 3000))),
                   "deep": ("[" * 100000 + "]" * 100000).encode(),
                   "empty": b"",
                   "nan-literal": text.replace('"n_classes": 72', '"n_classes": NaN').encode(),
                   "utf16": text.encode("utf-16")}[kind]
        path.write_bytes(content)
        return f"manifest text {kind}"
    for _ in range(int(rng.integers(1, 3))):
        paths = [p for p, _ in _paths(document) if p]
        if not paths:
            break
        target = pick(rng, paths)
        parent = _at(document, target[:-1])
        if op == "delete":
            del parent[target[-1]]
            done.append(f"del {'/'.join(map(str, target))}")
        elif op in ("retype", "range"):
            values = RETYPES if op == "retype" else [0, -1, 1, 10 ** 9, 2 ** 63, 1.5, 17, 32, 144]
            value = pick(rng, values)
            parent[target[-1]] = value
            done.append(f"{'/'.join(map(str, target))}={value!r:.20}")
        elif op == "bad-path":
            value = pick(rng, ["../model.onnx", "/etc/passwd", "", "sub/../../x", "model.onnx\0", "C:\\x"])
            where = pick(rng, ["artifact", "file"])
            if where == "artifact" and document.get("artifacts"):
                document["artifacts"][0]["path"] = value
            elif isinstance(document.get("files"), dict) and document["files"]:
                key = next(iter(document["files"]))
                document["files"][value] = document["files"].pop(key)
            done.append(f"{where} path {value!r}")
        if not isinstance(document, (dict, list)):
            break
    path.write_text(json.dumps(document))
    return f"manifest {op}: {'; '.join(done)}"
