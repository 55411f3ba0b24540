#!/usr/bin/env python3
"""Write a public/system tree in Mastodon's layout with Mastodon's size mix, for
scripts/bench/run.sh (the migrate line and the memory line).

    python3 scripts/bench/gen_tree.py DIR FILES [--tiny]

Layout (docs/reference paths of shared/docs/mastodon-storage.md §3): media originals with
their `small` style, video thumbnails, cache/ copies of remote media, avatars and headers,
custom emojis, preview cards, site uploads. Sizes, as Mastodon stores them:
  * small styles, thumbnails, avatars, headers, emojis, cards: 2-16 KiB;
  * image originals: 50-500 KiB;
  * video originals (1 in 100 media rows): 10-40 MiB (multipart at migrate's 8 MiB default).
With --tiny every file is 16 bytes (for peak-RSS runs at 100k-1M files, where only the
count matters). Deterministic: the same FILES gives the same tree. Prints one JSON line:
{"files": N, "bytes": N}.
"""

import hashlib
import json
import os
import random
import sys

KIB = 1024
MIB = 1024 * KIB
MAGIC = {
    "png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "jpeg": b"\xff\xd8\xff\xe0\0\x10JFIF\0",
    "mp4": b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom", "webp": b"RIFF\x24\0\0\0WEBPVP8 ",
}


def part(i, digits):
    s = str(i).zfill(digits)
    return "/".join(s[j:j + 3] for j in range(0, len(s), 3))


def main():
    root, n = sys.argv[1], int(sys.argv[2])
    tiny = "--tiny" in sys.argv[3:]
    rng = random.Random(11)
    pool = random.Random(12).randbytes(48 * MIB)
    state = {"files": 0, "bytes": 0}

    def write(key, size):
        if tiny:
            size = 16
        ext = key.rsplit(".", 1)[1]
        path = os.path.join(root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        head = MAGIC[ext]
        off = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big")
        off %= len(pool) - 40 * MIB
        with open(path, "wb") as f:
            f.write(head + pool[off:off + max(0, size - len(head))])
        state["files"] += 1
        state["bytes"] += max(size, len(head))

    def small():
        return rng.randint(2 * KIB, 16 * KIB)

    seq = 0
    while state["files"] < n:
        seq += 1
        r = rng.random()
        mid = 109345678901234567 + seq * 7919
        name = "%016x" % rng.getrandbits(64)
        if r < 0.80:  # media: 60 % remote (cache/), the rest local
            pre = "cache/" if rng.random() < 0.6 else ""
            base = f"{pre}media_attachments/files/{part(mid, 18)}"
            if rng.random() < 0.01:
                write(f"{base}/original/{name}.mp4", rng.randint(10 * MIB, 40 * MIB))
                write(f"{base}/small/{name}.png", small())
                write(f"{pre}media_attachments/thumbnails/{part(mid, 18)}/original/{name}.jpeg",
                      small())
            else:
                ext = rng.choice(["jpeg", "png", "webp"])
                write(f"{base}/original/{name}.{ext}", rng.randint(50 * KIB, 500 * KIB))
                write(f"{base}/small/{name}.{ext}", small())
        elif r < 0.90:  # avatars and headers
            acct = rng.randint(1, 10**9)
            pre = rng.choice(["cache/", ""])
            for att in ("avatars", "headers"):
                write(f"{pre}accounts/{att}/{part(acct, 9)}/original/{name}.jpeg", small())
        elif r < 0.96:  # preview cards
            write(f"cache/preview_cards/images/{part(rng.randint(1, 10**6), 9)}/original/"
                  f"{name}.webp", small())
        elif r < 0.995:  # custom emojis
            pre = rng.choice(["cache/", ""])
            eid = part(rng.randint(1, 10**6), 9)
            write(f"{pre}custom_emojis/images/{eid}/original/{name}.png", small())
            write(f"{pre}custom_emojis/images/{eid}/static/{name}.png", small())
        else:
            write(f"site_uploads/files/{part(rng.randint(1, 99), 9)}/original/{name}.png",
                  small())
    print(json.dumps(state))


if __name__ == "__main__":
    main()
