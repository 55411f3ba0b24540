#!/usr/bin/env python3
"""tests/support/s3server.py (moto + the SigV4-checking, counting proxy) with moto's
ListObjectsV2 answered from a sorted index of the bucket's key names: the same answers,
in time proportional to the page instead of the bucket.

    $MASTOMEDIA_TEST_PYTHON scripts/bench/fastmoto.py [s3server.py's arguments]
    $MASTOMEDIA_TEST_PYTHON scripts/bench/fastmoto.py --self-test

Why: moto 5.2.5's `S3Backend.list_objects_v2` (moto/s3/models.py) builds a set of every
key under the prefix, sorts it twice and scans it linearly for `start-after` or the
continuation token, on every page: about 45 µs per key under the prefix on this machine,
so 0.9 s per page at 20,000 objects and ~9 s at 200,000. No provider lists like that, and
it made the prune and du lines at 100k candidates measure moto instead of the tools (see
scripts/bench/analysis.md). Every tool of those lines lists through the same patched
server, so the ratios stay fair.

The patch (applied before s3server.py starts moto in-process):
  * each bucket's key store (moto.s3.utils._VersionedKeyStore) keeps a generation number,
    bumped when a key name is added (`__setitem__`, `setlist` of a new name);
  * ListObjectsV2 without a delimiter on an unversioned bucket bisects a sorted list of
    the store's names (rebuilt when the generation moved, or when more than half of its
    names were deleted since), skips names deleted since the build and delete markers, and
    pages with moto's own `_truncate_result` (same continuation tokens). Anything else
    (a delimiter, versioned buckets) goes to moto's original method.
`--self-test` compares both methods on a generated bucket (prefixes, start-after,
continuation tokens, page sizes, deletes and re-puts between pages) and exits non-zero on
any difference; scripts/bench/run.sh runs it before starting the server.
Standard library and moto only.
"""

import bisect
import os
import random
import runpy
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
S3SERVER = os.path.join(HERE, "..", "..", "tests", "support", "s3server.py")


def patch():
    """Replaces S3Backend.list_objects_v2 and S3Response.serialized (for ListObjectsV2
    without a delimiter); returns the original methods."""
    from moto.s3 import models, utils

    store_cls = utils._VersionedKeyStore
    orig_setitem, orig_setlist = store_cls.__setitem__, store_cls.setlist

    def bump(store, key):
        if not dict.__contains__(store, key):
            store.__dict__["_bench_gen"] = store.__dict__.get("_bench_gen", 0) + 1

    def setitem(self, key, value):
        bump(self, key)
        return orig_setitem(self, key, value)

    def setlist(self, key, list_):
        bump(self, key)
        return orig_setlist(self, key, list_)

    store_cls.__setitem__ = setitem
    store_cls.setlist = setlist
    orig_list = models.S3Backend.list_objects_v2
    lock = threading.Lock()

    def index(store):
        with lock:
            gen = store.__dict__.get("_bench_gen", 0)
            idx = store.__dict__.get("_bench_index")
            if idx is None or idx[0] != gen or len(idx[1]) > 2 * len(store) + 1000:
                idx = (gen, sorted(dict.keys(store)))
                store.__dict__["_bench_index"] = idx
            return idx[1]

    def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after,
                        max_keys):
        if (delimiter or isinstance(bucket, models.FakeTableStorageBucket)
                or getattr(bucket, "is_versioned", False)):
            return orig_list(self, bucket, prefix, delimiter, continuation_token,
                             start_after, max_keys)
        store = bucket.keys
        names = index(store)
        limit = (self._pagination_tokens.get(continuation_token) if continuation_token
                 else start_after)
        i = bisect.bisect_left(names, prefix or "")
        if limit:
            i = max(i, bisect.bisect_right(names, limit))
        out = []
        while i < len(names) and len(out) <= max_keys:
            name = names[i]
            i += 1
            if prefix and not name.startswith(prefix):
                break
            versions = dict.get(store, name)
            if not versions:
                continue
            key = versions[-1]
            if isinstance(key, models.FakeDeleteMarker):
                continue
            out.append(key)
        return self._truncate_result(out, max_keys)

    models.S3Backend.list_objects_v2 = list_objects_v2

    from moto.s3 import responses

    orig_serialized = responses.S3Response.serialized
    plain = {"Key", "LastModified", "ETag", "Size", "StorageClass"}

    def serialized(self, action_result):
        r = action_result.result
        if (self.data.get("Action") != "ListObjectsV2" or not isinstance(r, dict)
                or "Delimiter" in r or "CommonPrefixes" in r
                or any(set(c) != plain for c in r.get("Contents", []))):
            return orig_serialized(self, action_result)
        headers = {"Content-Type": "application/xml", "server": "amazon.com"}
        headers.update(self.response_headers)
        return 200, headers, list_xml(r)

    responses.S3Response.serialized = serialized
    return orig_list, orig_serialized


def list_xml(r):
    """The body moto's serializer writes for a ListObjectsV2 result without a delimiter,
    owners or checksums (the same bytes: `--self-test` compares them), in a fraction of
    its time (0.6 s per 1000 keys there)."""
    from xml.sax.saxutils import escape

    def el(name, value):
        if isinstance(value, bool):
            value = "true" if value else "false"
        value = escape(str(value))
        return f"<{name}>{value}</{name}>" if value else f"<{name}/>"

    out = ['<?xml version="1.0" encoding="utf-8"?>\n'
           '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
           el("IsTruncated", r["IsTruncated"])]
    for c in r.get("Contents", []):
        out.append("<Contents>" + el("Key", c["Key"]) + el("LastModified", c["LastModified"])
                   + el("ETag", c["ETag"]) + el("Size", c["Size"])
                   + el("StorageClass", c["StorageClass"]) + "</Contents>")
    for name in ("Name", "Prefix", "MaxKeys", "EncodingType", "KeyCount",
                 "ContinuationToken", "NextContinuationToken", "StartAfter"):
        if name in r:
            out.append(el(name, r[name]))
    out.append("</ListBucketResult>")
    return "".join(out)


def self_test():
    from moto.s3.models import S3Backend

    orig, orig_ser = patch()
    fast = S3Backend.list_objects_v2
    backend = S3Backend("us-east-1", "123456789012")
    backend.create_bucket("fastmoto-test", "us-east-1")
    bucket = backend.get_bucket("fastmoto-test")
    rng = random.Random(3)
    names = set()
    for _ in range(1000):
        parts = [rng.choice(["cache", "media_attachments", "a", "b"]) for _ in range(rng.randint(1, 4))]
        names.add("/".join(parts) + "/%04d" % rng.randrange(10000))
    for n in sorted(names):
        backend.put_object("fastmoto-test", n, b"x" * rng.randint(0, 9))

    def names_of(keys):
        return [k.name if hasattr(k, "name") else k for k in keys]

    def walk(method, prefix, start_after, max_keys):
        out, token, pages = [], None, 0
        while True:
            keys, truncated, token = method(backend, bucket, prefix, None, token,
                                            start_after if token is None else None, max_keys)
            out.append(names_of(keys))
            pages += 1
            if not truncated or pages > 10000:
                return out

    cases = 0
    for prefix in (None, "", "cache/", "a/b", "media_attachments/a/", "zzz"):
        for start_after in (None, "", "a/", "b/cache/5000", "cache/media_attachments"):
            for max_keys in (0, 3, 50, 1000):
                if max_keys == 3 and prefix in (None, ""):
                    continue  # ~330 pages: slow with the original method, nothing new
                a = walk(orig, prefix, start_after, max_keys)
                b = walk(fast, prefix, start_after, max_keys)
                if a != b:
                    sys.exit(f"fastmoto self-test: differs for prefix={prefix!r} "
                             f"start_after={start_after!r} max_keys={max_keys}")
                cases += 1
    # Deletes and new keys after the index was built: both methods see the same store.
    live = sorted(names)
    for step in range(3):
        walk(fast, "cache/", None, 100)  # builds the index
        victims = rng.sample(live, 60)
        for v in victims:
            backend.delete_object("fastmoto-test", v)
        for j in range(50):
            backend.put_object("fastmoto-test", f"cache/new{step}/{j:03d}", b"n")
        for prefix in ("cache/", None):
            if walk(orig, prefix, None, 100) != walk(fast, prefix, None, 100):
                sys.exit(f"fastmoto self-test: differs after deletes and puts (step {step})")
        live = [n for n in live if n not in victims]
        cases += 1
    cases += serializer_test(orig, orig_ser)
    print(f"fastmoto self-test: {cases} cases, identical answers")


def serializer_test(orig_list, orig_ser):
    """The patched ListObjectsV2 answer (index and serializer) against moto's own, byte
    for byte, through moto's WSGI app."""
    from moto.s3 import models, responses
    from moto.server import create_backend_app

    fast_list, fast_ser = models.S3Backend.list_objects_v2, responses.S3Response.serialized
    app = create_backend_app("s3")
    client = app.test_client()
    client.put("/fastmoto-ser")
    backend = next(b["global"] for b in models.s3_backends.values()
                   if "fastmoto-ser" in b["global"].buckets)
    for i in range(40):
        backend.put_object("fastmoto-ser", f"a b/{i:02d}&<x>'\"%.png", b"x" * i)
        backend.put_object("fastmoto-ser", f"cache/m/{i:03d}/original/f.png", b"y" * i)
    queries = ["list-type=2", "list-type=2&max-keys=7", "list-type=2&prefix=cache/&max-keys=5",
               "list-type=2&prefix=a&encoding-type=url&start-after=a",
               "list-type=2&prefix=a&max-keys=3", "list-type=2&prefix=zz",
               "list-type=2&prefix=cache/&start-after=cache/m/010&max-keys=4",
               "list-type=2&delimiter=/"]
    n = 0
    import hashlib
    # The continuation token of the page ending at the 7th key (moto's: md5 of that key).
    seventh = sorted(dict.keys(backend.get_bucket("fastmoto-ser").keys))[6]
    token = hashlib.md5(seventh.encode()).hexdigest()
    client.get("/fastmoto-ser?list-type=2&max-keys=7")  # registers the token
    queries.append(f"list-type=2&max-keys=7&continuation-token={token}")
    queries.append(f"list-type=2&max-keys=7&continuation-token={token}&start-after=zz")
    for q in queries:
        models.S3Backend.list_objects_v2 = orig_list
        responses.S3Response.serialized = orig_ser
        a = client.get("/fastmoto-ser?" + q)
        models.S3Backend.list_objects_v2 = fast_list
        responses.S3Response.serialized = fast_ser
        b = client.get("/fastmoto-ser?" + q)
        if a.status_code != 200 or (a.status_code, a.data) != (b.status_code, b.data):
            i = next((j for j, (x, y) in enumerate(zip(a.data, b.data)) if x != y),
                     min(len(a.data), len(b.data)))
            sys.exit(f"fastmoto self-test: ListObjectsV2 ?{q} differs at byte {i}: "
                     f"{a.data[max(0, i - 80):i + 80]!r} vs {b.data[max(0, i - 80):i + 80]!r}")
        n += 1
    return n


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        sys.exit(0)
    patch()
    sys.argv = [S3SERVER] + sys.argv[1:]
    runpy.run_path(S3SERVER, run_name="__main__")
