#!/usr/bin/env python3
"""Small boto3 helpers for scripts/bench/run.sh (run with $MASTOMEDIA_TEST_PYTHON).

    s3tool.py count ENDPOINT BUCKET
        -> {"objects": N, "bytes": N}  (paged ListObjectsV2, the ground truth a tool's
           own count is checked against)
    s3tool.py head-delete ENDPOINT BUCKET KEYS_FILE THREADS
        -> {"keys": N, "deleted": N, "gone": N, "seconds": F}
           The peer of `prune` that `tootctl media remove` stands for: for every key, one
           HeadObject (size, and whether it is still there), then one DeleteObject when it
           is, THREADS keys in flight. No database, no batching.

Credentials: mastomedia-test / mastomedia-test-secret (tests/support/s3server.py).
"""

import json
import sys
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint, threads=10):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="mastomedia-test", aws_secret_access_key="mastomedia-test-secret",
        config=Config(max_pool_connections=max(10, threads), s3={"addressing_style": "path"},
                      retries={"max_attempts": 5, "mode": "standard"},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))


def count(endpoint, bucket):
    c = client(endpoint)
    n = size = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            n += 1
            size += o["Size"]
    print(json.dumps({"objects": n, "bytes": size}))


def head_delete(endpoint, bucket, keys_file, threads):
    keys = [k for k in open(keys_file).read().split("\n") if k]
    c = client(endpoint, threads)
    lock = threading.Lock()
    it = iter(keys)
    st = {"deleted": 0, "gone": 0, "errors": 0}

    def worker():
        while True:
            with lock:
                k = next(it, None)
            if k is None:
                return
            try:
                c.head_object(Bucket=bucket, Key=k)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    with lock:
                        st["gone"] += 1
                    continue
                with lock:
                    st["errors"] += 1
                continue
            c.delete_object(Bucket=bucket, Key=k)
            with lock:
                st["deleted"] += 1

    t0 = time.time()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"keys": len(keys), **st, "seconds": round(time.time() - t0, 3)}))
    sys.exit(1 if st["errors"] else 0)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "count":
        count(sys.argv[2], sys.argv[3])
    elif cmd == "head-delete":
        head_delete(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(f"unknown command {cmd}")
