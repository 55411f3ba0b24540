#!/usr/bin/env python3
"""tests/support/s3server.py (moto + the SigV4-checking, counting proxy) with moto's
ListObjectsV2 and ListObjects (v1) answered from a sorted index of the bucket's key names:
the same answers, in time proportional to the page instead of the bucket.

    $MASTOMEDIA_TEST_PYTHON scripts/bench/fastmoto.py [s3server.py's arguments]
    $MASTOMEDIA_TEST_PYTHON scripts/bench/fastmoto.py --self-test

Why: moto 5.2.5's `S3Backend.list_objects_v2` (moto/s3/models.py) builds a set of every
key under the prefix, sorts it twice and scans it linearly for `start-after` or the
continuation token, on every page: about 45 µs per key under the prefix on this machine,
so 0.9 s per page at 20,000 objects and ~9 s at 200,000; its `list_objects` (v1, which
rclone with provider Other and s3cmd call) builds and sorts the same set per page, ~2 s
at 200,000. No provider lists like that, and
it made the prune and du lines at 100k candidates measure moto instead of the tools (see
scripts/bench/analysis.md). Every tool of those lines lists through the same patched
server, so the ratios stay fair.

The patch (applied before s3server.py starts moto in-process):
  * each bucket's key store (moto.s3.utils._VersionedKeyStore) keeps a generation number,
    bumped when a key name is added (`__setitem__`, `setlist` of a new name);
  * ListObjectsV2 without a delimiter on an unversioned bucket bisects a sorted list of
    the store's names (rebuilt when the generation moved, or when more than half of its
    names were deleted since), skips names deleted since the build and delete markers, and
    pages with moto's own `_truncate_result` (same continuation tokens). ListObjects v1
    without a delimiter on an unversioned bucket does the same from its marker (one of
    moto's md5 NextMarker tokens, or a key name). Anything else (a delimiter, versioned
    buckets) goes to moto's original methods;
  * the answers of both without a delimiter are serialized directly (`list_xml`,
    `list_xml_v1`) instead of through moto's generic serializer.
`--self-test` compares both methods of each call on a generated bucket (prefixes,
start-after, markers and continuation tokens, page sizes, deletes and re-puts between
walks and between the pages of one walk) and both HTTP answers byte for byte, and exits
non-zero on any difference; scripts/bench/run.sh runs it before starting the server.
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
    """Replaces S3Backend.list_objects_v2, S3Backend.list_objects and
    S3Response.serialized (for ListObjectsV2 and ListObjects without a delimiter);
    returns the original methods (list_objects_v2, serialized, list_objects)."""
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
    orig_list_v1 = models.S3Backend.list_objects
    lock = threading.Lock()

    def index(store):
        with lock:
            gen = store.__dict__.get("_bench_gen", 0)
            idx = store.__dict__.get("_bench_index")
            if idx is None or idx[0] != gen or len(idx[1]) > 2 * len(store) + 1000:
                idx = (gen, sorted(dict.keys(store)))
                store.__dict__["_bench_index"] = idx
            return idx[1]

    def indexed(self, store, prefix, limit, max_keys):
        """Up to max_keys + 1 live keys (latest versions, no delete markers) under prefix
        after limit, in name order, through _truncate_result: what moto's methods return
        for a bucket without a delimiter."""
        names = index(store)
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

    def plain_bucket(bucket, delimiter):
        return not (delimiter or isinstance(bucket, models.FakeTableStorageBucket)
                    or getattr(bucket, "is_versioned", False))

    def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after,
                        max_keys):
        if not plain_bucket(bucket, delimiter):
            return orig_list(self, bucket, prefix, delimiter, continuation_token,
                             start_after, max_keys)
        limit = (self._pagination_tokens.get(continuation_token) if continuation_token
                 else start_after)
        return indexed(self, bucket.keys, prefix, limit, max_keys)

    def list_objects(self, bucket, prefix, delimiter, marker, max_keys):
        # ListObjects v1 (rclone's default for provider Other, s3cmd): moto's marker is
        # one of its own md5 tokens or a key name; an empty marker is no marker.
        if max_keys is None or not plain_bucket(bucket, delimiter):
            return orig_list_v1(self, bucket, prefix, delimiter, marker, max_keys)
        limit = (self._pagination_tokens.get(marker) or marker) if marker else None
        keys, truncated, next_marker = indexed(self, bucket.keys, prefix, limit, max_keys)
        return keys, [], truncated, next_marker

    models.S3Backend.list_objects_v2 = list_objects_v2
    models.S3Backend.list_objects = list_objects

    from moto.s3 import responses

    orig_serialized = responses.S3Response.serialized
    plain = {"Key", "LastModified", "ETag", "Size", "StorageClass"}
    # ListObjects v1 answers always carry moto's fixed owner (moto/s3/responses.py).
    owned = plain | {"Owner"}

    def fast_body(action, r):
        if (not isinstance(r, dict) or "Delimiter" in r or "CommonPrefixes" in r):
            return None
        contents = r.get("Contents", [])
        if action == "ListObjectsV2" and all(set(c) == plain for c in contents):
            return list_xml(r)
        if action == "ListObjects" and all(
                set(c) == owned and set(c["Owner"]) == {"ID", "DisplayName"}
                for c in contents):
            return list_xml_v1(r)
        return None

    def serialized(self, action_result):
        body = fast_body(self.data.get("Action"), action_result.result)
        if body is None:
            return orig_serialized(self, action_result)
        headers = {"Content-Type": "application/xml", "server": "amazon.com"}
        headers.update(self.response_headers)
        return 200, headers, body

    responses.S3Response.serialized = serialized
    return orig_list, orig_serialized, orig_list_v1


def el(name, value):
    """`<name>value</name>` as moto's serializer writes it (booleans lower case, `<name/>`
    when empty, &, < and > escaped, quotes not)."""
    from xml.sax.saxutils import escape

    if isinstance(value, bool):
        value = "true" if value else "false"
    value = escape(str(value))
    return f"<{name}>{value}</{name}>" if value else f"<{name}/>"


def list_xml_v1(r):
    """The body moto's serializer writes for a ListObjects (v1) result without a
    delimiter (the same bytes: `--self-test` compares them). moto echoes no Marker."""
    out = ['<?xml version="1.0" encoding="utf-8"?>\n'
           '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
           el("IsTruncated", r["IsTruncated"])]
    if "NextMarker" in r:
        out.append(el("NextMarker", r["NextMarker"]))
    for c in r.get("Contents", []):
        o = c["Owner"]
        out.append("<Contents>" + el("Key", c["Key"]) + el("LastModified", c["LastModified"])
                   + el("ETag", c["ETag"]) + el("Size", c["Size"])
                   + el("StorageClass", c["StorageClass"]) + "<Owner>"
                   + el("DisplayName", o["DisplayName"]) + el("ID", o["ID"])
                   + "</Owner></Contents>")
    for name in ("Name", "Prefix", "MaxKeys", "EncodingType"):
        if name in r:
            out.append(el(name, r[name]))
    out.append("</ListBucketResult>")
    return "".join(out)


def list_xml(r):
    """The body moto's serializer writes for a ListObjectsV2 result without a delimiter,
    owners or checksums (the same bytes: `--self-test` compares them), in a fraction of
    its time (0.6 s per 1000 keys there)."""
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
    from moto.s3 import models
    from moto.s3.models import S3Backend

    orig, orig_ser, orig_v1 = patch()
    fast, fast_v1 = S3Backend.list_objects_v2, S3Backend.list_objects
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

    def walk_v1(method, prefix, marker, max_keys, by_name=False):
        # by_name: the next marker is the page's last key (what a client does without
        # NextMarker), else moto's NextMarker token.
        out, pages = [], 0
        while True:
            keys, folders, truncated, nxt = method(backend, bucket, prefix, None, marker,
                                                   max_keys)
            out.append((names_of(keys), list(folders), truncated))
            pages += 1
            if not truncated or pages > 10000:
                return out
            marker = keys[-1].name if by_name else nxt

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
                for by_name in (False, True):
                    a = walk_v1(orig_v1, prefix, start_after, max_keys, by_name)
                    b = walk_v1(fast_v1, prefix, start_after, max_keys, by_name)
                    if a != b:
                        sys.exit(f"fastmoto self-test: ListObjects v1 differs for "
                                 f"prefix={prefix!r} marker={start_after!r} "
                                 f"max_keys={max_keys} by_name={by_name}")
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
            if walk_v1(orig_v1, prefix, None, 100) != walk_v1(fast_v1, prefix, None, 100):
                sys.exit(f"fastmoto self-test: v1 differs after deletes and puts (step {step})")
        live = [n for n in live if n not in victims]
        cases += 1
    # Deletes and re-puts between the pages of one walk (s3cmd del lists, then deletes;
    # mastomedia deletes while it lists): each page of both methods on the same store.
    for by_name in (False, True):
        marker, token, page = None, None, 0
        while True:
            a = orig_v1(backend, bucket, None, None, marker, 37)
            b = fast_v1(backend, bucket, None, None, marker, 37)
            a2 = orig(backend, bucket, None, None, token, None, 37)
            b2 = fast(backend, bucket, None, None, token, None, 37)
            if (names_of(a[0]), a[1:]) != (names_of(b[0]), b[1:]) or \
                    (names_of(a2[0]), a2[1:]) != (names_of(b2[0]), b2[1:]):
                sys.exit(f"fastmoto self-test: page {page} differs with deletes and re-puts "
                         f"between pages (by_name={by_name})")
            if not a[2] and not a2[1]:
                break
            live = sorted(k for k, v in bucket.keys.items()
                          if not isinstance(v, models.FakeDeleteMarker))
            victims = rng.sample(live, min(len(live), 15))
            for v in victims:  # behind and ahead of the page
                backend.delete_object("fastmoto-test", v)
            for v in victims[:5]:  # some come back
                backend.put_object("fastmoto-test", v, b"again")
            for j in range(3):
                backend.put_object("fastmoto-test", f"{rng.choice(live)}-{page}-{j}", b"n")
            page += 1
            if a[2]:
                marker = a[0][-1].name if by_name else a[3]
            if a2[1]:
                token = a2[2]
            if page > 2000:
                sys.exit("fastmoto self-test: walk with deletes does not end")
        cases += 1
    cases += serializer_test(orig, orig_v1, orig_ser)
    print(f"fastmoto self-test: {cases} cases, identical answers")


def serializer_test(orig_list, orig_v1, orig_ser):
    """The patched ListObjectsV2 and ListObjects (v1) answers (index and serializer)
    against moto's own, byte for byte, through moto's WSGI app."""
    from moto.s3 import models, responses
    from moto.server import create_backend_app

    fast_list, fast_ser = models.S3Backend.list_objects_v2, responses.S3Response.serialized
    fast_v1 = models.S3Backend.list_objects
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
    # ListObjects v1: NextMarker tokens, key-name markers, prefixes, encoding, delimiter.
    queries += ["", "max-keys=7", f"max-keys=7&marker={token}", f"marker={seventh}",
                "marker=", "prefix=", "prefix=cache/&max-keys=5&marker=cache/m/010",
                "prefix=a&encoding-type=url&max-keys=3", "prefix=zz", "max-keys=0",
                "marker=zz", "delimiter=/", "prefix=cache/&delimiter=/&max-keys=2"]
    for q in queries:
        models.S3Backend.list_objects_v2 = orig_list
        models.S3Backend.list_objects = orig_v1
        responses.S3Response.serialized = orig_ser
        a = client.get("/fastmoto-ser?" + q)
        models.S3Backend.list_objects_v2 = fast_list
        models.S3Backend.list_objects = fast_v1
        responses.S3Response.serialized = fast_ser
        b = client.get("/fastmoto-ser?" + q)
        if a.status_code != 200 or (a.status_code, a.data) != (b.status_code, b.data):
            i = next((j for j, (x, y) in enumerate(zip(a.data, b.data)) if x != y),
                     min(len(a.data), len(b.data)))
            sys.exit(f"fastmoto self-test: ListObjects ?{q} differs at byte {i}: "
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
