#!/usr/bin/env python3
"""Local S3 test server for mastomedia: moto plus a fault-injecting, SigV4-checking proxy.

Run with the venv python from scripts/services.sh ($MASTOMEDIA_TEST_PYTHON):

    $MASTOMEDIA_TEST_PYTHON tests/support/s3server.py [--port-file F] [--no-stdin-watch]

It starts moto's S3 server in-process (127.0.0.1, free port) and a reverse proxy in front
of it (127.0.0.1, free port), prints one JSON line to stdout

    {"moto": "http://127.0.0.1:P1", "proxy": "http://127.0.0.1:P2"}

and serves until its stdin reaches EOF (the test harness holds the pipe), or until killed
with --no-stdin-watch. Point clients at "proxy", path-style.

Proxy behaviour (everything per bucket = first path segment):
  * every S3 request must carry a valid AWS SigV4 signature (header or presigned query);
    credentials: mastomedia-test / mastomedia-test-secret, plus S3SERVER_CREDENTIALS
    ("ak:sk,ak2:sk2"). Errors: AccessDenied (no auth), InvalidAccessKeyId,
    SignatureDoesNotMatch (403), XAmzContentSHA256Mismatch (400).
  * faults (FAULT_FIELDS): error storms, stalls, per-key delete errors, connection
    resets before or after the request ran (a TCP RST, no answer), provider quirks; the
    random ones are seeded so a failing run replays (tests/it/chaos.rs).
  * DeleteObjects honours Quiet (moto ignores it) and refuses more than 1000 keys
    (MalformedXML), like S3.
  * control API (no auth):
      PUT    /__faults/<bucket>   JSON config (see FAULT_FIELDS), replaces the old one
      GET    /__faults/<bucket>   current config and remaining counters
      DELETE /__faults/<bucket>   clear
      GET    /__stats/<bucket>    {"ops": {...}, "mutating": N, "total": N,
                                   "delete_keys": [keys named by DeleteObject(s)],
                                   "put_keys": [keys of PutObject and
                                                CreateMultipartUpload requests],
                                   "max_per_second": most requests (attempts) that
                                   arrived within any 1 s window, "injected": N,
                                   "injected_ops": {op: injected faults},
                                   "error_answers": {op: answers with status >= 400},
                                   ...}
      DELETE /__stats/<bucket>    reset
      POST   /__objects/<bucket>  {"objects": [[key, body text], ...]}: puts each object
                                  straight into moto's backend (no HTTP per object, not
                                  counted in the stats): bulk seeding of 10k+ objects
      POST   /__reset             clear all faults and stats (moto state: POST /moto-api/reset)
      GET    /__health            {"ok": true}
    /moto-api/... is forwarded to moto without a signature check.

Latency: --latency-ms N (or S3SERVER_LATENCY_MS=N) delays every S3 request by N ms
before it is checked and forwarded (control requests and /moto-api are not delayed), like
a provider 20-80 ms away; the per-bucket fault field "latency_ms" overrides it for one
bucket. Requests are delayed concurrently (one thread per connection), so parallel
clients pay the latency once per round trip, as against a real provider.

Only the standard library and what moto installs are used.
"""

import argparse
import base64
import calendar
import hashlib
import hmac
import html
import http.client
import io
import json
import logging
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

DEFAULT_CREDENTIALS = {"mastomedia-test": "mastomedia-test-secret"}
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_DELETE_KEYS = 1000

FAULT_FIELDS = {
    # key -> S3 error code; "*" matches every key. Applies to DeleteObjects (per-key
    # <Error>) and to DeleteObject (whole request fails with that code).
    "delete_errors": dict,
    # each key's injected error happens only the first N times it is requested
    "delete_errors_times": int,
    # {"count": N, "ops": [...]}: first N requests of those ops (all ops if empty) -> 503 SlowDown
    "slowdown": dict,
    # DeleteObjects without / with a wrong Content-MD5 -> 400 MissingContentMD5 / InvalidDigest
    "require_content_md5": bool,
    # DeleteObjects -> 501 NotImplemented
    "multi_delete_not_implemented": bool,
    # any request carrying x-amz-checksum-* or x-amz-sdk-checksum-algorithm -> 400
    # InvalidArgument "Unsupported header" (Backblaze B2, OVH, older MinIO/R2)
    "reject_checksum_headers": bool,
    # unsigned GET/HEAD requests are forwarded instead of answering AccessDenied
    "allow_anonymous": bool,
    # {"count": N, "ops": [...], "seconds": S}: the first N requests of those ops (all ops if
    # empty) are answered only after S seconds (a stalled provider)
    "stall": dict,
    # {"rate": R, "codes": [...], "seed": N, "ops": [...], "seconds": S}: each request of
    # those ops (all ops if empty) fails with probability R (0..1) with one of the codes
    # (default SlowDown and InternalError). The draw is a hash of the seed N (default 0),
    # the request (operation, key, query and body) and how many times that same request
    # came before: a request's fate does not depend on which other requests arrived or in
    # what order, so a run that adds or reorders requests does not move the storm onto
    # the ones it had, and a failing run replays. With "seconds", only during the S
    # seconds after the first request the fault applies to (a storm at the start).
    # Answered before moto sees the request (nothing happens).
    "error_rate": dict,
    # {prefix: code}: every ListObjectsV2 whose result range could hold a key starting with
    # one of these fails with that S3 error code (a listing that keeps failing): its prefix
    # parameter starts with it, or its prefix is shorter and the page's key range (after
    # start-after, or after the last key of the page its continuation token followed,
    # up to the page's last key when truncated) covers keys that start with it. A key
    # works as a prefix. So a wide range listing that passes over the prefix fails too,
    # and so does the narrow listing of that prefix alone.
    "list_errors": dict,
    # GetObjectAcl -> 501 NotImplemented (providers without ACL reads, e.g. R2)
    "acl_not_implemented": bool,
    # a truncated ListObjectsV2 page loses its NextContinuationToken (a broken provider or
    # proxy): the client must not take the page for the end of the listing
    "truncated_without_token": bool,
    # object requests (not DeleteObjects) have their path's dot segments removed (RFC 3986
    # 5.2.4) after the signature check, as some servers and fronting proxies do: a key
    # with ".." segments then addresses another object
    "normalize_dot_segments": bool,
    # {"rate": R, "seed": N, "ops": [...], "when": "before" | "after" | "both", "count": C}:
    # each request of those ops (all ops if empty) has its connection reset (TCP RST, no
    # response at all) with probability R (0..1, default 1), drawn from its own generator
    # seeded with N (default 0). "before" (default): moto never sees the request;
    # "after": moto executes it and the answer is lost (the client cannot tell whether
    # it happened); "both": each reset picks one of the two from the same generator.
    # With "count", at most C resets in all.
    "reset": dict,
    # N: every S3 request of the bucket is answered N milliseconds later than moto
    # answers it (a provider across the internet; replaces the server's --latency-ms)
    "latency_ms": int,
}

ERROR_STATUS = {
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "InternalError": 500,
    "SlowDown": 503,
    "TooManyRequests": 429,
    "ServiceUnavailable": 503,
    "NoSuchKey": 404,
    "NoSuchBucket": 404,
    "NotImplemented": 501,
    "MethodNotAllowed": 405,
}

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")



# --------------------------------------------------------------------------- helpers


def xml_escape(s):
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\r", "&#13;")
    )


def error_xml(code, message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()


def remove_dot_segments(path):
    """RFC 3986 section 5.2.4 on a raw path ("/b/a/../c" -> "/b/c")."""
    out = []
    segs = path.split("/")
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out)


def local_name(tag):
    return tag.rsplit("}", 1)[-1]


def normalize_encoded(raw, keep_slash):
    """Percent-encode every byte that is not unreserved and not already a %XX escape."""
    data = raw.encode("latin-1", "surrogateescape") if isinstance(raw, str) else raw
    out = []
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c == 0x25 and i + 2 < n and data[i + 1] in HEXDIGITS and data[i + 2] in HEXDIGITS:
            out.append(data[i : i + 3].decode("ascii"))
            i += 3
            continue
        if c in UNRESERVED or (keep_slash and c == 0x2F):
            out.append(chr(c))
        else:
            out.append("%%%02X" % c)
        i += 1
    return "".join(out)


def split_query(query):
    """Raw query string -> list of (raw key, raw value) as sent."""
    pairs = []
    for part in query.split("&"):
        if part == "":
            continue
        k, _, v = part.partition("=")
        pairs.append((k, v))
    return pairs


def canonical_query(pairs, exclude=()):
    items = []
    for k, v in pairs:
        if k in exclude:
            continue
        items.append((normalize_encoded(k, False), normalize_encoded(v, False)))
    items.sort()
    return "&".join(f"{k}={v}" for k, v in items)


def hmac_sha256(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    k = hmac_sha256(("AWS4" + secret).encode("utf-8"), date)
    k = hmac_sha256(k, region)
    k = hmac_sha256(k, service)
    return hmac_sha256(k, "aws4_request")


def load_credentials():
    creds = dict(DEFAULT_CREDENTIALS)
    extra = os.environ.get("S3SERVER_CREDENTIALS", "")
    for item in extra.split(","):
        item = item.strip()
        if not item:
            continue
        ak, sep, sk = item.partition(":")
        if sep:
            creds[ak.strip()] = sk.strip()
    return creds


class ResetConnection(Exception):
    """Raised to drop the client's connection with a TCP RST instead of answering."""


class S3Error(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


def classify(method, bucket, key, params, headers):
    """Operation name from method, path and query parameter names."""
    q = {unquote(k): unquote(v) for k, v in params}
    # aws-sdk-s3 tags requests with ?x-id=<Operation> (DeleteObject, PutObject, GetObject...);
    # it names the operation and is no sub-resource.
    q.pop("x-id", None)
    if not bucket:
        return "ListBuckets" if method == "GET" else "Other"
    if key == "":
        if method == "GET":
            if q.get("list-type") == "2":
                return "ListObjectsV2"
            if "versions" in q:
                return "ListObjectVersions"
            if "uploads" in q:
                return "ListMultipartUploads"
            if "acl" in q:
                return "GetBucketAcl"
            if "versioning" in q:
                return "GetBucketVersioning"
            subresources = {
                "location", "versioning", "policy", "cors", "lifecycle", "tagging",
                "website", "logging", "notification", "replication", "encryption",
                "object-lock", "ownershipControls", "publicAccessBlock", "accelerate",
                "requestPayment", "analytics", "inventory", "metrics", "intelligent-tiering",
                "policyStatus",
            }
            if subresources & q.keys():
                return "Other"
            return "ListObjects"
        if method == "HEAD":
            return "HeadBucket"
        if method == "POST" and "delete" in q:
            return "DeleteObjects"
        if method == "PUT":
            if "acl" in q:
                return "PutBucketAcl"
            return "CreateBucket" if not q else "Other"
        if method == "DELETE":
            return "DeleteBucket" if not q else "Other"
        return "Other"
    # object-level
    if method == "GET":
        if "acl" in q:
            return "GetObjectAcl"
        if "uploadId" in q:
            return "ListParts"
        if "tagging" in q or "attributes" in q or "retention" in q or "legal-hold" in q:
            return "Other"
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "acl" in q:
            return "PutObjectAcl"
        if "partNumber" in q and "uploadId" in q:
            return "UploadPart"
        if q:
            return "Other"
        if headers.get("x-amz-copy-source") is not None:
            return "CopyObject"
        return "PutObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        if "delete" in q:
            return "DeleteObjects"
        return "Other"
    if method == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        if q and "versionId" not in q:
            return "Other"
        return "DeleteObject"
    return "Other"


# --------------------------------------------------------------------------- state


def storm_draw(seed, ident, nth):
    """(uniform draw in [0, 1), an integer) for the nth arrival of the request `ident`
    under the error_rate storm seeded with `seed`: a pure function of the three."""
    op, key, query, body_digest = ident
    h = hashlib.sha256()
    for part in (str(seed), op, key, query, str(nth)):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    h.update(body_digest)
    d = h.digest()
    return int.from_bytes(d[:7], "big") / float(1 << 56), int.from_bytes(d[7:11], "big")


class BucketState:
    def __init__(self):
        self.config = {}
        self.slowdown_left = 0
        self.stall_left = 0
        self.delete_error_counts = {}
        # error_rate: request identity -> how many times it has arrived
        self.error_seen = {}
        self.error_started = None
        self.reset_rng = random.Random(0)
        self.resets_left = None
        # continuation token -> last key of the page that issued it (ListObjectsV2), for
        # list_errors
        self.list_tokens = {}
        # serialises listings and writes at moto (ProxyHandler.forward)
        self.moto_lock = threading.Lock()
        self.reset_stats()

    def reset_stats(self):
        self.ops = {}
        self.total = 0
        self.mutating = 0
        self.injected = 0
        self.injected_ops = {}
        self.error_answers = {}
        self.auth_failures = 0
        self.delete_objects_keys = 0
        self.max_delete_objects_keys = 0
        self.delete_keys = []
        self.put_keys = []
        self.arrivals = []
        self.resets_before = 0
        self.resets_after = 0

    def inject(self, op):
        """Counts one injected fault on `op` (hold the state lock)."""
        self.injected += 1
        self.injected_ops[op] = self.injected_ops.get(op, 0) + 1

    def max_per_second(self):
        """Most arrivals within any window [t, t + 1 s)."""
        best = 0
        lo = 0
        for hi, t in enumerate(self.arrivals):
            while self.arrivals[lo] <= t - 1.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.buckets = {}

    def bucket(self, name):
        b = self.buckets.get(name)
        if b is None:
            b = self.buckets[name] = BucketState()
        return b


def validate_config(cfg):
    if not isinstance(cfg, dict):
        raise ValueError("config must be a JSON object")
    for k, v in cfg.items():
        if k not in FAULT_FIELDS:
            raise ValueError(f"unknown field {k!r}; known: {sorted(FAULT_FIELDS)}")
        t = FAULT_FIELDS[k]
        if v is None:
            continue
        if t is int and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"{k} must be a non-negative integer")
        if t is bool and not isinstance(v, bool):
            raise ValueError(f"{k} must be true or false")
        if t is dict and not isinstance(v, dict):
            raise ValueError(f"{k} must be an object")
    de = cfg.get("delete_errors") or {}
    for key, code in de.items():
        if not isinstance(code, str) or not code:
            raise ValueError(f"delete_errors[{key!r}] must be an S3 error code string")
    sd = cfg.get("slowdown")
    if sd is not None:
        unknown = set(sd) - {"count", "ops"}
        if unknown:
            raise ValueError(f"unknown slowdown fields {sorted(unknown)}")
        count = sd.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("slowdown.count must be a non-negative integer")
        ops = sd.get("ops") or []
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise ValueError("slowdown.ops must be a list of operation names")
    er = cfg.get("error_rate")
    if er is not None:
        unknown = set(er) - {"rate", "codes", "seed", "ops", "seconds"}
        if unknown:
            raise ValueError(f"unknown error_rate fields {sorted(unknown)}")
        rate = er.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError("error_rate.rate must be a number from 0 to 1")
        codes = er.get("codes") or ["SlowDown", "InternalError"]
        if not isinstance(codes, list) or not all(c in ERROR_STATUS for c in codes):
            raise ValueError(f"error_rate.codes must be a list of {sorted(ERROR_STATUS)}")
        seed = er.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("error_rate.seed must be an integer")
        ops = er.get("ops") or []
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise ValueError("error_rate.ops must be a list of operation names")
        secs = er.get("seconds")
        if secs is not None and (isinstance(secs, bool) or not isinstance(secs, (int, float))
                                 or secs <= 0):
            raise ValueError("error_rate.seconds must be a positive number")
    rs = cfg.get("reset")
    if rs is not None:
        unknown = set(rs) - {"rate", "seed", "ops", "when", "count"}
        if unknown:
            raise ValueError(f"unknown reset fields {sorted(unknown)}")
        rate = rs.get("rate", 1)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError("reset.rate must be a number from 0 to 1")
        if rs.get("when", "before") not in ("before", "after", "both"):
            raise ValueError('reset.when must be "before", "after" or "both"')
        seed = rs.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("reset.seed must be an integer")
        count = rs.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise ValueError("reset.count must be a non-negative integer")
        ops = rs.get("ops") or []
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise ValueError("reset.ops must be a list of operation names")


# --------------------------------------------------------------------------- proxy


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, moto_addr, credentials, latency_ms=0):
        super().__init__(addr, ProxyHandler)
        self.moto_addr = moto_addr
        self.credentials = credentials
        self.latency_ms = latency_ms
        self.state = State()
        self.verbose = bool(os.environ.get("S3SERVER_VERBOSE"))


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mastomedia-s3server/1"

    def version_string(self):
        return self.server_version
    timeout = 600

    # ---------------------------------------------------------------- plumbing

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("s3server: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.handle_any()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise S3Error(400, "IncompleteBody", "chunked body ended early")
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise S3Error(400, "InvalidRequest", "bad chunk size")
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                data = self.rfile.read(size)
                if len(data) != size:
                    raise S3Error(400, "IncompleteBody", "chunked body ended early")
                chunks.append(data)
                self.rfile.readline(65537)  # CRLF after the chunk
            return b"".join(chunks)
        cl = self.headers.get("Content-Length")
        if cl:
            n = int(cl)
            data = self.rfile.read(n)
            if len(data) != n:
                raise S3Error(400, "IncompleteBody", "body shorter than Content-Length")
            return data
        return b""

    def send_raw(self, status, headers, body, reason=None, head=False):
        if getattr(self, "_reset_after", False):
            # the request was executed; its answer is lost
            self._reset_after = False
            raise ResetConnection()
        if status >= 400 and self._bucket_state is not None:
            with self.server.state.lock:
                ea = self._bucket_state.error_answers
                ea[self._op] = ea.get(self._op, 0) + 1
        self.send_response(status, reason)
        have_len = False
        for k, v in headers:
            lk = k.lower()
            if lk in HOP_BY_HOP or lk in ("server", "date"):
                continue
            if lk == "content-length":
                if head:
                    have_len = True
                    self.send_header(k, v)
                continue
            self.send_header(k, v)
        if not head and status not in (204, 304) and not (100 <= status < 200):
            self.send_header("Content-Length", str(len(body)))
        elif head and not have_len and status not in (204, 304):
            self.send_header("Content-Length", "0")
        self.end_headers()
        if body and not head and status not in (204, 304):
            self.wfile.write(body)

    def send_error_xml(self, status, code, message, extra_headers=()):
        body = error_xml(code, message)
        headers = [("Content-Type", "application/xml")] + list(extra_headers)
        self.send_raw(status, headers, body, head=self.command == "HEAD")

    def send_json(self, status, obj):
        body = (json.dumps(obj, sort_keys=True) + "\n").encode()
        self.send_raw(status, [("Content-Type", "application/json")], body,
                      head=self.command == "HEAD")

    def moto_conn(self, fresh=False):
        conn = getattr(self, "_moto_conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            host, port = self.server.moto_addr
            conn = http.client.HTTPConnection(host, port, timeout=600)
            self._moto_conn = conn
        return conn

    def forward(self, method, target, headers, body):
        """Send a request to moto; return (status, reason, headers, body). Listings and
        writes of one bucket reach moto one at a time: moto 5.2.5's listing is not safe
        against a concurrent delete (a KeyError, answered 500 InternalError), which S3
        never does, and which would pass for a fault nobody injected."""
        b = self._bucket_state
        if b is not None and (self._op == "ListObjectsV2"
                              or method in ("PUT", "POST", "DELETE")):
            with b.moto_lock:
                return self._forward(method, target, headers, body)
        return self._forward(method, target, headers, body)

    def _forward(self, method, target, headers, body):
        # http.client needs an ASCII request target
        if any(ord(c) > 127 for c in target):
            target = "".join(
                c if ord(c) < 128 else "".join("%%%02X" % b for b in c.encode("latin-1"))
                for c in target
            )
        for attempt in (0, 1):
            conn = self.moto_conn(fresh=attempt > 0)
            try:
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    lk = k.lower()
                    if lk in HOP_BY_HOP or lk in ("content-length", "expect"):
                        continue
                    conn.putheader(k, v)
                if body or method in ("PUT", "POST", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                result = (resp.status, resp.reason, resp.getheaders(), data)
                if resp.will_close:
                    conn.close()
                return result
            except (http.client.RemoteDisconnected, http.client.BadStatusLine,
                    ConnectionError, BrokenPipeError) as e:
                conn.close()
                self._moto_conn = None
                if attempt == 1:
                    raise S3Error(502, "InternalError", f"moto unreachable: {e}")
        raise AssertionError("unreachable")

    def reset_connection(self):
        """Close the client socket with SO_LINGER 0 (a TCP RST), writing nothing."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        # nothing buffered may reach the client
        self.wfile = io.BytesIO()

    def handle_any(self):
        self._op = None
        self._bucket_state = None
        self._body_done = False
        self._reset_after = False
        try:
            self._handle()
        except ResetConnection:
            self.reset_connection()
        except S3Error as e:
            # keep the connection alive when the request body was consumed
            if not self._body_done:
                self.close_connection = True
            try:
                self.send_error_xml(e.status, e.code, e.message, e.headers)
            except ResetConnection:
                self.reset_connection()
            except Exception:
                pass
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception as e:  # a bug in the proxy: report it loudly
            traceback.print_exc()
            self.close_connection = True
            try:
                self.send_error_xml(500, "InternalError", f"s3server proxy error: {e!r}")
            except Exception:
                pass

    # ---------------------------------------------------------------- dispatch

    def _handle(self):
        target = self.path
        if target.startswith("http://") or target.startswith("https://"):
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        raw_path, _, raw_query = target.partition("?")
        if raw_path.startswith("/__"):
            self.read_body_for_control()
            return
        if raw_path == "/moto-api" or raw_path.startswith("/moto-api/"):
            body = self.read_body()
            st, reason, hdrs, data = self.forward(self.command, target, self.headers.items(), body)
            self.send_raw(st, hdrs, data, reason, head=self.command == "HEAD")
            return

        body = self.read_body()
        self._body_done = True
        segs = raw_path.lstrip("/").split("/", 1)
        bucket = unquote(segs[0])
        key = unquote(segs[1]) if len(segs) > 1 else ""
        params = split_query(raw_query)
        op = classify(self.command, bucket, key, params, self.headers)
        st = self.server.state
        with st.lock:
            b = st.bucket(bucket)
            self._op = op
            self._bucket_state = b
            b.ops[op] = b.ops.get(op, 0) + 1
            b.total += 1
            b.arrivals.append(time.monotonic())
            if self.command in ("PUT", "POST", "DELETE"):
                b.mutating += 1
            cfg = b.config

        latency_ms = cfg.get("latency_ms", self.server.latency_ms) if cfg else self.server.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000.0)

        try:
            self.check_auth(raw_path, params, body, cfg)
        except S3Error:
            with st.lock:
                b.auth_failures += 1
            raise

        # --- injected faults
        if cfg:
            if op == "DeleteObjects" and cfg.get("multi_delete_not_implemented"):
                self.injected(b)
                raise S3Error(501, "NotImplemented",
                              "A header you provided implies functionality that is not implemented")
            if cfg.get("reject_checksum_headers"):
                for k, _ in self.headers.items():
                    lk = k.lower()
                    if lk.startswith("x-amz-checksum-") or lk == "x-amz-sdk-checksum-algorithm":
                        self.injected(b)
                        raise S3Error(400, "InvalidArgument",
                                      f"Unsupported header '{lk}' received for this API call.")
            if op == "GetObjectAcl" and cfg.get("acl_not_implemented"):
                self.injected(b)
                raise S3Error(501, "NotImplemented",
                              "A header you provided implies functionality that is not implemented")
            stall = cfg.get("stall")
            if stall:
                ops = stall.get("ops") or []
                with st.lock:
                    hit = b.stall_left > 0 and (not ops or op in ops)
                    if hit:
                        b.stall_left -= 1
                        b.inject(op)
                if hit:
                    time.sleep(float(stall.get("seconds", 30)))
            sd = cfg.get("slowdown")
            if sd:
                ops = sd.get("ops") or []
                with st.lock:
                    hit = b.slowdown_left > 0 and (not ops or op in ops)
                    if hit:
                        b.slowdown_left -= 1
                        b.inject(op)
                if hit:
                    raise S3Error(503, "SlowDown", "Please reduce your request rate.",
                                  [("Retry-After", "0")])
            le = cfg.get("list_errors")
            if le and op == "ListObjectsV2":
                q = {unquote(k): unquote(v) for k, v in params}
                for pfx, code in le.items():
                    if q.get("prefix", "").startswith(pfx):
                        self.injected(b)
                        raise S3Error(ERROR_STATUS.get(code, 400), code, "injected (list_errors)")
            er = cfg.get("error_rate")
            if er:
                ops = er.get("ops") or []
                code = None
                with st.lock:
                    if not ops or op in ops:
                        now = time.monotonic()
                        if b.error_started is None:
                            b.error_started = now
                        secs = er.get("seconds")
                        if secs is None or now - b.error_started < secs:
                            ident = (op, key, raw_query, hashlib.sha256(body or b"").digest())
                            nth = b.error_seen.get(ident, 0)
                            b.error_seen[ident] = nth + 1
                            draw, pick = storm_draw(er.get("seed", 0), ident, nth)
                            if draw < er.get("rate", 0):
                                codes = er.get("codes") or ["SlowDown", "InternalError"]
                                code = codes[pick % len(codes)]
                                b.inject(op)
                if code:
                    raise S3Error(ERROR_STATUS[code], code, "injected (error_rate)")
            if op == "DeleteObject" and cfg.get("delete_errors"):
                code = self.take_delete_error(b, cfg, key)
                if code:
                    raise S3Error(ERROR_STATUS.get(code, 400), code, "injected")
            rs = cfg.get("reset")
            if rs:
                ops = rs.get("ops") or []
                when = None
                with st.lock:
                    if (not ops or op in ops) and (b.resets_left is None or b.resets_left > 0):
                        if b.reset_rng.random() < rs.get("rate", 1):
                            when = rs.get("when", "before")
                            if when == "both":
                                when = b.reset_rng.choice(["before", "after"])
                            if b.resets_left is not None:
                                b.resets_left -= 1
                            b.inject(op)
                            if when == "before":
                                b.resets_before += 1
                            else:
                                b.resets_after += 1
                if when == "before":
                    raise ResetConnection()
                if when == "after":
                    self._reset_after = True

        if op == "DeleteObject":
            with st.lock:
                b.delete_keys.append(key)
        if op in ("PutObject", "CreateMultipartUpload"):
            with st.lock:
                b.put_keys.append(key)

        if op == "DeleteObjects":
            self.delete_objects(b, cfg, target, body)
            return

        if cfg.get("normalize_dot_segments") and key:
            target = remove_dot_segments(raw_path) + ("?" + raw_query if raw_query else "")

        st_, reason, hdrs, data = self.forward(self.command, target, self.headers.items(), body)
        if op == "ListObjectsV2" and st_ == 200 and cfg.get("list_errors"):
            code = self.listed_range_error(b, cfg["list_errors"], params, data)
            if code:
                self.injected(b)
                raise S3Error(ERROR_STATUS.get(code, 400), code, "injected (list_errors)")
        if op == "ListObjectsV2" and st_ == 200 and cfg.get("truncated_without_token"):
            data = re.sub(rb"<NextContinuationToken>.*?</NextContinuationToken>", b"", data,
                          flags=re.S)
        if op == "GetBucketVersioning" and st_ == 200:
            # moto 5.2.5 names the root GetBucketVersioningResponse; S3 says
            # VersioningConfiguration (the SDK reads nothing from the other name).
            data = data.replace(b"<GetBucketVersioningResponse", b"<VersioningConfiguration").replace(
                b"</GetBucketVersioningResponse>", b"</VersioningConfiguration>")
        if op == "ListParts" and st_ == 200:
            # moto 5.2.5 names the root ListPartsResponse; S3 (and the SDK) say ListPartsResult.
            data = data.replace(b"<ListPartsResponse", b"<ListPartsResult").replace(
                b"</ListPartsResponse>", b"</ListPartsResult>")
        self.send_raw(st_, hdrs, data, reason, head=self.command == "HEAD")

    def listed_range_error(self, b, list_errors, params, data):
        """The list_errors code whose prefix the key range of this ListObjectsV2 page
        (`data`: moto's answer) could hold, or None. The range: keys below the prefix
        parameter, after start-after (or after the last key of the page whose
        continuation token this request carries; unknown token: from the start), up to
        the page's last key when the page is truncated (else to the end). Records this
        page's continuation token."""
        q = {unquote(k): unquote(v) for k, v in params}
        prefix = q.get("prefix", "")
        url = q.get("encoding-type") == "url"

        def text(raw):
            t = html.unescape(raw.decode("utf-8"))
            return unquote(t) if url else t

        keys = [text(k) for k in re.findall(rb"<Key>(.*?)</Key>", data, re.S)]
        rolled = [text(p) for p in re.findall(rb"<CommonPrefixes>\s*<Prefix>(.*?)</Prefix>",
                                               data, re.S)]
        token = re.search(rb"<NextContinuationToken>(.*?)</NextContinuationToken>", data, re.S)
        truncated = re.search(rb"<IsTruncated>\s*true\s*</IsTruncated>", data) is not None
        # the page's last key; a rolled-up prefix covers every key below it
        last = max(keys + [p + "\U0010ffff" for p in rolled], default=None)
        with self.server.state.lock:
            if "continuation-token" in q:
                start = b.list_tokens.get(q["continuation-token"])
            else:
                start = q.get("start-after") or None
            if token is not None and last is not None:
                b.list_tokens[text(token.group(1))] = last
        end = last if truncated else None
        for pfx, code in list_errors.items():
            if prefix.startswith(pfx):
                return code
            if not pfx.startswith(prefix):
                continue
            # keys starting with pfx run from pfx itself to just below its successor
            if start is not None and start >= pfx and not start.startswith(pfx):
                continue
            if end is not None and end < pfx:
                continue
            return code
        return None

    def injected(self, b):
        with self.server.state.lock:
            b.inject(self._op)

    def take_delete_error(self, b, cfg, key):
        errors = cfg.get("delete_errors") or {}
        code = errors.get(key) or errors.get("*")
        if not code:
            return None
        times = cfg.get("delete_errors_times")
        with self.server.state.lock:
            n = b.delete_error_counts.get(key, 0)
            if times is not None and n >= times:
                return None
            b.delete_error_counts[key] = n + 1
            b.inject(self._op)
        return code

    # ---------------------------------------------------------------- DeleteObjects

    def delete_objects(self, b, cfg, target, body):
        if cfg.get("require_content_md5"):
            md5 = self.headers.get("Content-MD5")
            if md5 is None:
                self.injected(b)
                raise S3Error(400, "MissingContentMD5",
                              "Missing required header for this request: Content-MD5")
            want = base64.b64encode(hashlib.md5(body).digest()).decode()
            if md5.strip() != want:
                self.injected(b)
                raise S3Error(400, "InvalidDigest",
                              "The Content-MD5 you specified was invalid.")
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed "
                          "or did not validate against our published schema")
        if local_name(root.tag) != "Delete":
            raise S3Error(400, "MalformedXML", "root element must be Delete")
        quiet = False
        objects = []
        for child in root:
            name = local_name(child.tag)
            if name == "Quiet":
                quiet = (child.text or "").strip().lower() == "true"
            elif name == "Object":
                fields = {local_name(c.tag): (c.text or "") for c in child}
                if "Key" not in fields:
                    raise S3Error(400, "MalformedXML", "Object without Key")
                objects.append(fields)
        if not objects or len(objects) > MAX_DELETE_KEYS:
            raise S3Error(400, "MalformedXML",
                          f"DeleteObjects needs 1 to {MAX_DELETE_KEYS} keys, got {len(objects)}")
        with self.server.state.lock:
            b.delete_keys.extend(o["Key"] for o in objects)
            b.delete_objects_keys += len(objects)
            b.max_delete_objects_keys = max(b.max_delete_objects_keys, len(objects))

        injected = []
        remaining = []
        for obj in objects:
            code = self.take_delete_error(b, cfg, obj["Key"]) if cfg.get("delete_errors") else None
            if code:
                injected.append((obj, code))
            else:
                remaining.append(obj)

        deleted_elems = []
        error_elems = []
        if remaining:
            headers = list(self.headers.items())
            fwd_body = body
            if injected:
                parts = [f'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="{S3_NS}">',
                         f"<Quiet>{'true' if quiet else 'false'}</Quiet>"]
                for obj in remaining:
                    parts.append("<Object>")
                    for k, v in obj.items():
                        parts.append(f"<{k}>{xml_escape(v)}</{k}>")
                    parts.append("</Object>")
                parts.append("</Delete>")
                fwd_body = "".join(parts).encode("utf-8")
                new_headers = []
                for k, v in headers:
                    lk = k.lower()
                    if lk.startswith("x-amz-checksum-") or lk == "x-amz-sdk-checksum-algorithm":
                        continue
                    if lk == "content-md5":
                        v = base64.b64encode(hashlib.md5(fwd_body).digest()).decode()
                    new_headers.append((k, v))
                headers = new_headers
            st, reason, hdrs, data = self.forward("POST", target, headers, fwd_body)
            if st != 200:
                self.send_raw(st, hdrs, data, reason)
                return
            try:
                resp_root = ET.fromstring(data)
            except ET.ParseError:
                raise S3Error(500, "InternalError", "moto returned unparsable DeleteResult")
            for child in resp_root:
                name = local_name(child.tag)
                if name == "Deleted":
                    deleted_elems.append(child)
                elif name == "Error":
                    error_elems.append(child)

        out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="{S3_NS}">']
        if not quiet:
            for el in deleted_elems:
                out.append(serialize(el))
        for el in error_elems:
            out.append(serialize(el))
        for obj, code in injected:
            out.append("<Error><Key>%s</Key>" % xml_escape(obj["Key"]))
            if obj.get("VersionId"):
                out.append("<VersionId>%s</VersionId>" % xml_escape(obj["VersionId"]))
            out.append("<Code>%s</Code><Message>injected</Message></Error>" % xml_escape(code))
        out.append("</DeleteResult>")
        self.send_raw(200, [("Content-Type", "application/xml")], "".join(out).encode("utf-8"))

    # ---------------------------------------------------------------- SigV4

    def check_auth(self, raw_path, params, body, cfg):
        headers = self.headers
        auth = headers.get("Authorization")
        qnames = {k for k, _ in params}
        if auth is None and "X-Amz-Algorithm" in qnames:
            return self.check_presigned(raw_path, params)
        if auth is None:
            if cfg.get("allow_anonymous") and self.command in ("GET", "HEAD"):
                return
            raise S3Error(403, "AccessDenied", "Access Denied (request is not signed)")
        m = re.match(r"\s*AWS4-HMAC-SHA256\s+(.*)$", auth, re.S)
        if not m:
            raise S3Error(403, "AccessDenied", "only AWS4-HMAC-SHA256 authorization is supported")
        fields = {}
        for part in m.group(1).split(","):
            k, sep, v = part.strip().partition("=")
            if sep:
                fields[k.strip()] = v.strip()
        try:
            credential = fields["Credential"]
            signed_headers = fields["SignedHeaders"]
            signature = fields["Signature"]
            ak, date, region, service, term = credential.split("/")
        except (KeyError, ValueError):
            raise S3Error(400, "AuthorizationHeaderMalformed",
                          "The authorization header is malformed")
        secret = self.server.credentials.get(ak)
        if secret is None:
            raise S3Error(403, "InvalidAccessKeyId",
                          "The AWS Access Key Id you provided does not exist in our records.")
        amz_date = headers.get("x-amz-date")
        if amz_date is None:
            raise S3Error(403, "AccessDenied",
                          "AWS authentication requires a valid Date or x-amz-date header")
        payload_hash = headers.get("x-amz-content-sha256")
        if payload_hash is None:
            raise S3Error(400, "InvalidRequest",
                          "Missing required header for this request: x-amz-content-sha256")
        if re.fullmatch(r"[0-9a-fA-F]{64}", payload_hash):
            if hashlib.sha256(body).hexdigest() != payload_hash.lower():
                raise S3Error(400, "XAmzContentSHA256Mismatch",
                              "The provided 'x-amz-content-sha256' header does not match "
                              "what was computed.")
        canonical_q = canonical_query(params)
        self.verify(raw_path, canonical_q, signed_headers, payload_hash, amz_date,
                    f"{date}/{region}/{service}/{term}", secret, date, region, service,
                    signature)

    def check_presigned(self, raw_path, params):
        q = {}
        for k, v in params:
            q.setdefault(unquote(k), unquote(v))
        if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise S3Error(400, "AuthorizationQueryParametersError",
                          "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
        try:
            ak, date, region, service, term = q["X-Amz-Credential"].split("/")
            amz_date = q["X-Amz-Date"]
            signed_headers = q["X-Amz-SignedHeaders"]
            signature = q["X-Amz-Signature"]
            expires = int(q.get("X-Amz-Expires", "604800"))
        except (KeyError, ValueError):
            raise S3Error(400, "AuthorizationQueryParametersError",
                          "Query-string authentication requires the X-Amz-* parameters")
        secret = self.server.credentials.get(ak)
        if secret is None:
            raise S3Error(403, "InvalidAccessKeyId",
                          "The AWS Access Key Id you provided does not exist in our records.")
        try:
            t0 = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise S3Error(400, "AuthorizationQueryParametersError", "bad X-Amz-Date")
        if time.time() > t0 + expires:
            raise S3Error(403, "AccessDenied", "Request has expired")
        payload_hash = self.headers.get("x-amz-content-sha256") or "UNSIGNED-PAYLOAD"
        canonical_q = canonical_query(params, exclude=("X-Amz-Signature",))
        self.verify(raw_path, canonical_q, signed_headers, payload_hash, amz_date,
                    f"{date}/{region}/{service}/{term}", secret, date, region, service,
                    signature)

    def verify(self, raw_path, canonical_q, signed_headers, payload_hash, amz_date, scope,
               secret, date, region, service, signature):
        names = [h.strip().lower() for h in signed_headers.split(";") if h.strip()]
        canon_headers = []
        for name in names:
            values = self.headers.get_all(name) or []
            value = ",".join(re.sub(r"[ \t]+", " ", v.strip(" \t")) for v in values)
            canon_headers.append(f"{name}:{value}\n")
        canonical_uri = normalize_encoded(raw_path or "/", True)
        canonical_request = "\n".join([
            self.command,
            canonical_uri,
            canonical_q,
            "".join(canon_headers),
            ";".join(names),
            payload_hash,
        ])
        string_to_sign = "\n".join([
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            # header values were decoded as latin-1: encoding back gives the bytes as sent
            hashlib.sha256(canonical_request.encode("latin-1", "replace")).hexdigest(),
        ])
        key = signing_key(secret, date, region, service)
        want = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature.strip().lower()):
            if self.server.verbose:
                sys.stderr.write("s3server: signature mismatch; canonical request:\n"
                                 + canonical_request + "\n")
            raise S3Error(403, "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature "
                          "you provided. Check your key and signing method.")

    # ---------------------------------------------------------------- control API

    def read_body_for_control(self):
        body = self.read_body()
        path = self.path.partition("?")[0]
        st = self.server.state
        m = re.fullmatch(r"/__(faults|stats|objects)/([^/]+)", path)
        if path == "/__health" and self.command in ("GET", "HEAD"):
            return self.send_json(200, {"ok": True})
        if path == "/__reset" and self.command == "POST":
            with st.lock:
                st.buckets.clear()
            return self.send_json(200, {"ok": True})
        if not m:
            return self.send_json(404, {"error": f"unknown control path {path}"})
        kind, bucket = m.group(1), unquote(m.group(2))
        if kind == "objects":
            if self.command != "POST":
                return self.send_json(405, {"error": f"{self.command} not allowed on {path}"})
            try:
                objects = json.loads(body or b"{}")["objects"]
                if not all(isinstance(o, list) and len(o) == 2 and all(isinstance(x, str)
                                                                       for x in o)
                           for o in objects):
                    raise ValueError("objects must be [[key, body], ...] of strings")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
                return self.send_json(400, {"error": str(e)})
            backend = moto_backend_of(bucket)
            if backend is None:
                return self.send_json(404, {"error": f"no bucket {bucket!r} in moto"})
            with st.bucket(bucket).moto_lock:
                for key, data in objects:
                    backend.put_object(bucket, key, data.encode("utf-8"))
            return self.send_json(200, {"put": len(objects)})
        if kind == "faults":
            if self.command == "PUT":
                try:
                    cfg = json.loads(body or b"{}")
                    validate_config(cfg)
                except (ValueError, UnicodeDecodeError) as e:
                    return self.send_json(400, {"error": str(e)})
                cfg = {k: v for k, v in cfg.items() if v is not None}
                with st.lock:
                    b = st.bucket(bucket)
                    b.config = cfg
                    b.slowdown_left = (cfg.get("slowdown") or {}).get("count", 0)
                    b.stall_left = (cfg.get("stall") or {}).get("count", 0)
                    b.delete_error_counts = {}
                    b.error_seen = {}
                    b.error_started = None
                    b.reset_rng = random.Random((cfg.get("reset") or {}).get("seed", 0))
                    b.resets_left = (cfg.get("reset") or {}).get("count")
                return self.send_json(200, {"bucket": bucket, "config": cfg})
            if self.command == "DELETE":
                with st.lock:
                    b = st.bucket(bucket)
                    b.config = {}
                    b.slowdown_left = 0
                    b.stall_left = 0
                    b.delete_error_counts = {}
                    b.resets_left = None
                return self.send_json(200, {"bucket": bucket, "config": {}})
            if self.command == "GET":
                with st.lock:
                    b = st.bucket(bucket)
                    out = {"bucket": bucket, "config": b.config,
                           "slowdown_left": b.slowdown_left,
                           "delete_error_counts": dict(b.delete_error_counts)}
                return self.send_json(200, out)
        else:
            if self.command == "GET":
                with st.lock:
                    b = st.bucket(bucket)
                    out = {"ops": dict(b.ops), "mutating": b.mutating, "total": b.total,
                           "injected": b.injected, "injected_ops": dict(b.injected_ops),
                           "error_answers": dict(b.error_answers),
                           "auth_failures": b.auth_failures,
                           "delete_objects_keys": b.delete_objects_keys,
                           "max_delete_objects_keys": b.max_delete_objects_keys,
                           "delete_keys": list(b.delete_keys),
                           "put_keys": list(b.put_keys),
                           "max_per_second": b.max_per_second(),
                           "resets_before": b.resets_before,
                           "resets_after": b.resets_after}
                return self.send_json(200, out)
            if self.command == "DELETE":
                with st.lock:
                    st.bucket(bucket).reset_stats()
                return self.send_json(200, {"ok": True})
        return self.send_json(405, {"error": f"{self.command} not allowed on {path}"})


def moto_backend_of(bucket):
    """moto's in-process S3 backend that holds `bucket` (moto runs in this process), or
    None."""
    from moto.s3.models import s3_backends

    for account in list(s3_backends.keys()):
        backend = s3_backends[account]["global"]
        if bucket in backend.buckets:
            return backend
    return None


def serialize(el):
    name = local_name(el.tag)
    children = list(el)
    if children:
        inner = "".join(serialize(c) for c in children)
    else:
        inner = xml_escape(el.text or "")
    return f"<{name}>{inner}</{name}>"


# --------------------------------------------------------------------------- main


def watch_stdin():
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--port-file", help="also write the JSON line to this file")
    ap.add_argument("--no-stdin-watch", action="store_true",
                    help="do not exit at EOF on stdin (run until killed)")
    ap.add_argument("--moto-port", type=int, default=0)
    ap.add_argument("--proxy-port", type=int, default=0)
    ap.add_argument("--latency-ms", type=int,
                    default=int(os.environ.get("S3SERVER_LATENCY_MS") or 0),
                    help="delay every S3 request by this many milliseconds "
                         "(default: $S3SERVER_LATENCY_MS or 0)")
    args = ap.parse_args()

    verbose = bool(os.environ.get("S3SERVER_VERBOSE"))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=args.moto_port, verbose=False)
    moto.start()
    moto_host, moto_port = moto.get_host_and_port()

    proxy = ProxyServer(("127.0.0.1", args.proxy_port), (moto_host, moto_port),
                        load_credentials(), latency_ms=args.latency_ms)
    proxy_port = proxy.server_address[1]

    info = json.dumps({"moto": f"http://127.0.0.1:{moto_port}",
                       "proxy": f"http://127.0.0.1:{proxy_port}"})
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(info + "\n")
        os.replace(tmp, args.port_file)
    sys.stdout.write(info + "\n")
    sys.stdout.flush()
    # nothing else may reach stdout
    sys.stdout = sys.stderr

    if not args.no_stdin_watch:
        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    try:
        proxy.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
