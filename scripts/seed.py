#!/usr/bin/env python3
"""Seed a scratch Mastodon database and its bucket (or filesystem root) with realistic data.

Run with the venv python from scripts/services.sh ($MASTOMEDIA_TEST_PYTHON); needs only the
standard library, boto3 and the `psql` client. The database must already hold a schema
fixture (tests/fixtures/mastodon-4.6.sql or -4.2.sql) and no media rows.

    $MASTOMEDIA_TEST_PYTHON scripts/seed.py \\
        --database-url postgres://postgres@127.0.0.1:5432/mastomedia_demo \\
        --endpoint http://127.0.0.1:PORT --bucket mastomedia-demo --create-bucket \\
        --media 3000 --seed 1

What it writes (all counts deterministic for a given --seed; ids and times are relative to
--now, default the current time):

  * media_attachments (--media N rows, or enough rows for --candidates N prune candidates):
    ~90% remote, ~10% local uploads (remote_url ''); ~70% older than 7 days; image/jpeg,
    png, webp (original + small, same name), GIFs stored as video/mp4 (type gifv), video/mp4
    (small is .png), audio/mpeg (original only); thumbnails on some video/audio rows
    (pre-4.6 ones with thumbnail_storage_schema_version NULL, newer ones 1 under cache/);
    ~10% legacy rows (file_storage_schema_version NULL, keys without cache/); some rows
    with the file already cleared but the thumbnail left; some already pruned; a few rows
    whose `small` object is missing; a handful with 17-digit (pre-2018) ids.
  * statuses for most media (1-4 media each), favourites and bookmarks by local accounts.
  * accounts (--accounts, ~15% local): avatars and headers, GIF avatars with a `static`
    png style; follows between local and some remote accounts.
  * custom_emojis (--emoji, mostly remote; original + static), preview_cards (--cards,
    ~40% last updated over 180 days ago) linked to statuses, two site_uploads.
  * a few orphan objects no row references (--orphans).

Object keys follow docs/mastodon-storage.md §3 (shared docs): `cache/` iff the attachment's
storage schema version >= 1 and the record is remote; id_partition; styles chosen from the
content type. Bodies are random bytes of 1-40 KiB (--object-sizes), uploaded by a thread
pool straight to the S3 endpoint given (use s3server.py's "moto" URL, not the proxy) with
Content-Type set; or, with --bulk-proxy, put straight into moto's backend through the
proxy's control API (about 30x faster, keys and sizes only: for prune and du benchmarks).
--media-days LO:HI puts every media row's creation LO to HI days ago (7:8: a busy day
of candidates) instead of the usual spread.

--objects all|candidates|none: upload every object, only those of prune candidates (at
--days), or none (rows only, e.g. for memory benchmarks).
Prints one summary line on stdout (and JSON with --summary-json FILE).
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time

ACCESS_KEY = "mastomedia-test"
SECRET_KEY = "mastomedia-test-secret"
LOCAL_DOMAIN = "example.social"
EPOCH = dt.datetime(1970, 1, 1)
# Mastodon 4.6 release: thumbnails written after it carry thumbnail_storage_schema_version 1.
RELEASE_4_6 = dt.datetime(2026, 6, 17)

# --------------------------------------------------------------------------- key layout
# Written from shared/docs/mastodon-storage.md §3, independently of the Rust code.


def id_partition(record_id):
    """§3.4: pad to 9 (<= 9 digits) or 12 (10-12 digits), groups of 3, drop a short tail."""
    s = str(record_id)
    if len(s) <= 9:
        s = s.zfill(9)
    elif len(s) <= 12:
        s = s.zfill(12)
    usable = len(s) - len(s) % 3
    return "/".join(s[i:i + 3] for i in range(0, usable, 3))


def style_file_name(stored, fmt):
    """§3.5: original keeps the stored name; other styles: basename + '.' + format (or the
    stored extension when the style has no format)."""
    if "." in stored:
        base, ext = stored.rsplit(".", 1)
    else:
        base, ext = stored, ""
    ext = fmt if fmt else ext
    return f"{base}.{ext}" if ext else base


def media_file_styles(content_type):
    """§3.6 for media_attachments.file: [(style, format or None)], original first."""
    ct = content_type or ""
    if ct in ("image/gif", "video/webm", "video/quicktime", "video/mp4", "video/ogg"):
        return [("original", None), ("small", "png")]
    if ct in ("image/heic", "image/heif", "image/avif"):
        return [("original", None), ("small", "jpeg")]
    if ct in ("image/jpeg", "image/png", "image/webp"):
        return [("original", None), ("small", None)]
    return [("original", None)]


def attachment_styles(cls, att, content_type, site_var=None):
    if (cls, att) == ("media_attachments", "files"):
        return media_file_styles(content_type)
    if cls == "accounts" and content_type == "image/gif":
        return [("original", None), ("static", "png")]
    if cls == "custom_emojis":
        return [("original", None), ("static", "png")]
    if cls == "site_uploads" and site_var == "thumbnail":
        return [("original", None), ("@1x", "png"), ("@2x", "png")]
    return [("original", None)]


FORMAT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "mp4": "video/mp4"}


def attachment_objects(cls, att, record_id, stored, content_type, version, remote,
                       key_prefix="", site_var=None):
    """[(key, content_type, style)] for one stored attachment (§3.1-3.6)."""
    head = "cache/" if (version or 0) >= 1 and remote else ""
    part = id_partition(record_id)
    out = []
    for style, fmt in attachment_styles(cls, att, content_type, site_var):
        key = f"{head}{cls}/{att}/{part}/{style}/{style_file_name(stored, fmt)}"
        if key_prefix:
            key = f"{key_prefix}/{key}"
        ct = FORMAT_TYPES.get(fmt, content_type) if style != "original" else content_type
        out.append((key, ct or "application/octet-stream", style))
    return out


def _self_test():
    cases = {1: "000/000/001", 4242: "000/004/242", 123456789: "123/456/789",
             1000000000: "001/000/000/000", 99999999999: "099/999/999/999",
             1234567890123: "123/456/789/012", 99999999999999999: "999/999/999/999/999",
             109345678901234567: "109/345/678/901/234/567",
             111677748019200000: "111/677/748/019/200/000"}
    for i, want in cases.items():
        assert id_partition(i) == want, (i, id_partition(i), want)
    k = [o[0] for o in attachment_objects("media_attachments", "files", 109345678901234567,
                                          "0a1b2c3d4e5f6071.mp4", "video/mp4", 1, True)]
    assert k == ["cache/media_attachments/files/109/345/678/901/234/567/original/0a1b2c3d4e5f6071.mp4",
                 "cache/media_attachments/files/109/345/678/901/234/567/small/0a1b2c3d4e5f6071.png"], k
    k = [o[0] for o in attachment_objects("media_attachments", "thumbnails", 109345678901234567,
                                          "1122334455667788.jpeg", "image/jpeg", None, True)]
    assert k == ["media_attachments/thumbnails/109/345/678/901/234/567/original/1122334455667788.jpeg"], k
    k = [o[0] for o in attachment_objects("accounts", "avatars", 123456789,
                                          "aaaaaaaaaaaaaaaa.gif", "image/gif", 1, True)]
    assert k == ["cache/accounts/avatars/123/456/789/original/aaaaaaaaaaaaaaaa.gif",
                 "cache/accounts/avatars/123/456/789/static/aaaaaaaaaaaaaaaa.png"], k
    k = [o[0] for o in attachment_objects("site_uploads", "files", 3, "dddddddddddddddd.png",
                                          "image/png", None, False, site_var="thumbnail")]
    assert k == ["site_uploads/files/000/000/003/original/dddddddddddddddd.png",
                 "site_uploads/files/000/000/003/@1x/dddddddddddddddd.png",
                 "site_uploads/files/000/000/003/@2x/dddddddddddddddd.png"], k
    k = [o[0] for o in attachment_objects("media_attachments", "files", 5, "8f3a2b1c4d5e6f70.png",
                                          "image/png", 1, False)]
    assert k[0] == "media_attachments/files/000/000/005/original/8f3a2b1c4d5e6f70.png", k


# --------------------------------------------------------------------------- generation


def ts(t):
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def ms_of(t):
    return int((t - EPOCH).total_seconds() * 1000)


class Snowflakes:
    def __init__(self):
        self.seq = 0
        self.used = set()

    def at(self, t):
        ms = ms_of(t)
        while True:
            self.seq += 1
            i = (ms << 16) | (self.seq & 0xFFFF)
            if i not in self.used:
                self.used.add(i)
                return i


MEDIA_KINDS = [
    # (weight, content type, extension choices, type column, thumbnail probability)
    (45, "image/jpeg", ["jpg", "jpeg"], 0, 0.0),
    (15, "image/png", ["png"], 0, 0.0),
    (8, "image/webp", ["webp"], 0, 0.0),
    (10, "video/mp4", ["mp4"], 1, 0.0),   # GIFs: Mastodon stores them as mp4 (gifv)
    (16, "video/mp4", ["mp4"], 2, 0.35),
    (6, "audio/mpeg", ["mp3"], 4, 0.5),
]
REMOTE_DOMAINS = [f"{n}.example" for n in (
    "mastodon", "fosstodon", "hachyderm", "infosec", "mstdn", "chaos", "social-a",
    "social-b", "photog", "pixel", "kolektiva", "techhub", "mas", "sigmoid", "octodon",
    "toot-cafe", "mathstodon", "scholar", "aus", "norden")]


class Gen:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.now = args.now
        self.cutoff = self.now - dt.timedelta(days=args.days)
        self.media_ids = Snowflakes()
        self.status_ids = Snowflakes()
        self.account_ids = Snowflakes()
        self.names = set()
        self.rows = {t: [] for t in ("accounts", "statuses", "media_attachments",
                                     "custom_emojis", "preview_cards", "preview_cards_statuses",
                                     "site_uploads", "follows", "favourites", "bookmarks")}
        # objects: key -> (content_type, size, owner tag, is_prune_candidate)
        self.objects = {}
        self.missing = 0
        self.missing_candidates = 0
        self.stats = {}
        self.has_thumb_version = True

    # -- helpers
    def hexname(self, ext):
        while True:
            n = "%016x" % self.rng.getrandbits(64)
            if n not in self.names:
                self.names.add(n)
                return f"{n}.{ext}"

    def size(self):
        return self.rng.randint(*self.a.object_sizes)

    def age(self, lo, hi):
        """Days ago: an integer day plus 0.05-0.95, so that no row sits within an hour of
        an integer-day cutoff (counts do not drift while the demo runs)."""
        d = self.rng.randint(lo, hi - 1)
        return self.now - dt.timedelta(days=d + self.rng.uniform(0.05, 0.95))

    def add_objects(self, objs, size_original, tag, candidate, drop_small=False):
        for key, ct, style in objs:
            if drop_small and style == "small":
                self.missing += 1
                self.missing_candidates += int(candidate)
                continue
            size = size_original if style == "original" else self.size()
            assert key not in self.objects, key
            self.objects[key] = (ct, size, tag, candidate)

    def bump(self, k, n=1):
        self.stats[k] = self.stats.get(k, 0) + n

    # -- accounts
    def gen_accounts(self):
        a, rng = self.a, self.rng
        n = a.accounts
        n_local = max(2, n * 15 // 100)
        serials = rng.sample(range(1, 50000), n // 4)
        self.local_accounts, self.remote_accounts = [], []
        for i in range(n):
            local = i < n_local
            created = self.age(0, 1500)
            aid = serials.pop() if serials else self.account_ids.at(created)
            domain = None if local else rng.choice(REMOTE_DOMAINS)
            username = f"user{i}"
            row = {
                "id": aid, "username": username, "domain": domain,
                "uri": "" if local else f"https://{domain}/users/{username}",
                "url": f"https://{domain or LOCAL_DOMAIN}/@{username}",
                "display_name": f"User {i}", "note": "",
                "created_at": created, "updated_at": created,
                "last_webfingered_at": None if local else max(created, self.age(0, 400)),
                "header_remote_url": "", "avatar_remote_url": None,
            }
            if not local:
                row["updated_at"] = max(created, row["last_webfingered_at"] - dt.timedelta(hours=1))
            for att, p, kinds in (("avatar", 0.9, [(50, "image/jpeg"), (30, "image/png"),
                                                   (12, "image/gif"), (8, "image/webp")]),
                                  ("header", 0.7, [(60, "image/jpeg"), (40, "image/png")])):
                if rng.random() >= p:
                    continue
                ct = rng.choices([k[1] for k in kinds], [k[0] for k in kinds])[0]
                ext = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif",
                       "image/webp": "webp"}[ct]
                name = self.hexname(ext)
                version = 1 if local or rng.random() < 0.85 else None
                size = self.size()
                row.update({f"{att}_file_name": name, f"{att}_content_type": ct,
                            f"{att}_file_size": size, f"{att}_updated_at": row["updated_at"],
                            f"{att}_storage_schema_version": version})
                if not local:
                    row[f"{att}_remote_url"] = f"https://{domain}/system/accounts/{att}s/{name}"
                objs = attachment_objects("accounts", f"{att}s", aid, name, ct, version,
                                          not local, a.key_prefix)
                self.add_objects(objs, size, "account", False)
                self.bump(f"{att}s")
            self.rows["accounts"].append(row)
            (self.local_accounts if local else self.remote_accounts).append(row)
        # Posting activity is skewed (Zipf-like): a few accounts post most media, many are
        # dormant, so profile pruning finds candidates.
        self.remote_cum = self._cum_weights(len(self.remote_accounts))
        self.local_cum = self._cum_weights(len(self.local_accounts))
        # follows: each local account follows ~4 remote accounts; some remote follow back
        seen = set()
        for la in self.local_accounts:
            for ra in rng.sample(self.remote_accounts, min(4, len(self.remote_accounts))):
                for pair in ((la["id"], ra["id"]), (ra["id"], la["id"])):
                    if pair in seen or (pair[0] == ra["id"] and rng.random() > 0.3):
                        continue
                    seen.add(pair)
                    t = self.age(0, 300)
                    self.rows["follows"].append({"account_id": pair[0], "target_account_id": pair[1],
                                                 "created_at": t, "updated_at": t})

    @staticmethod
    def _cum_weights(n):
        out, acc = [], 0.0
        for i in range(n):
            acc += 1.0 / (i + 1) ** 1.1
            out.append(acc)
        return out

    # -- media and statuses
    def media_row(self, account, created, status_id, kind, legacy_17=False):
        rng = self.rng
        remote = account["domain"] is not None
        w, ct, exts, mtype, p_thumb = kind
        mid = self.media_ids.at(created)
        name = self.hexname(rng.choice(exts))
        size = self.size()
        age_days = (self.now - created).total_seconds() / 86400
        if not remote:
            version = 1
        elif legacy_17:
            version = None
        else:
            version = None if age_days > 120 and rng.random() < 0.38 else 1
        row = {
            "id": mid, "status_id": status_id, "account_id": account["id"],
            "remote_url": (f"https://{account['domain']}/system/media_attachments/files/"
                           f"{id_partition(mid)}/original/{name}") if remote else "",
            "file_file_name": name, "file_content_type": ct, "file_file_size": size,
            "file_updated_at": created, "file_storage_schema_version": version,
            "file_meta": json.dumps({"original": {"width": 1200, "height": 800},
                                     "small": {"width": 640, "height": 427}}),
            "thumbnail_file_name": None, "thumbnail_content_type": None,
            "thumbnail_file_size": None, "thumbnail_updated_at": None,
            "thumbnail_remote_url": None, "thumbnail_storage_schema_version": None,
            "type": mtype, "description": "alt text" if rng.random() < 0.4 else None,
            "blurhash": "LEHV6nWB2yk8pyo0adR*.7kCMdnj", "processing": 2,
            "created_at": created, "updated_at": created,
        }
        if rng.random() < p_thumb:
            tname = self.hexname(rng.choice(["jpeg", "png"]))
            tver = None
            if not self.has_thumb_version:
                pass  # before 4.6 the column does not exist: always the prefix-less key
            elif remote and created >= RELEASE_4_6 and rng.random() < 0.85:
                tver = 1
            elif not remote:
                tver = 1 if created >= RELEASE_4_6 else None
            row.update({"thumbnail_file_name": tname,
                        "thumbnail_content_type": "image/jpeg" if tname.endswith("jpeg") else "image/png",
                        "thumbnail_file_size": self.size(), "thumbnail_updated_at": created,
                        "thumbnail_storage_schema_version": tver})
            if remote:
                row["thumbnail_remote_url"] = f"https://{account['domain']}/system/thumbs/{tname}"
        state = "cached"
        if remote and age_days > 7:
            r = rng.random()
            if row["thumbnail_file_name"] and r < 0.15:
                state = "thumb_only"
            elif r < 0.04:
                state = "pruned"
        if state in ("thumb_only", "pruned"):
            row.update({"file_file_name": None, "file_content_type": None,
                        "file_file_size": None, "file_updated_at": None})
        if state == "pruned":
            row.update({"thumbnail_file_name": None, "thumbnail_content_type": None,
                        "thumbnail_file_size": None, "thumbnail_updated_at": None})
        candidate = remote and created <= self.cutoff and (
            row["file_file_name"] is not None or row["thumbnail_file_name"] is not None)
        # objects
        if row["file_file_name"]:
            objs = attachment_objects("media_attachments", "files", mid, name, ct, version,
                                      remote, self.a.key_prefix)
            drop_small = remote and rng.random() < 0.01
            self.add_objects(objs, size, "media", candidate, drop_small)
        if row["thumbnail_file_name"]:
            objs = attachment_objects("media_attachments", "thumbnails", mid,
                                      row["thumbnail_file_name"], row["thumbnail_content_type"],
                                      row["thumbnail_storage_schema_version"], remote,
                                      self.a.key_prefix)
            self.add_objects(objs, row["thumbnail_file_size"], "media", candidate)
        # stats
        self.bump("media")
        self.bump("media_remote" if remote else "media_local")
        if remote and version is None:
            self.bump("media_legacy")
        if len(str(mid)) == 17:
            self.bump("media_17digit")
        if row["thumbnail_file_name"]:
            self.bump("media_with_thumbnail")
            if row["thumbnail_storage_schema_version"] is None and remote:
                self.bump("thumbnails_pre_4_6")
        if state != "cached":
            self.bump("media_" + state)
        if remote and created <= self.now - dt.timedelta(days=7):
            self.bump("media_remote_older_7d")
        if candidate:
            self.bump("candidates")
        self.rows["media_attachments"].append(row)
        return row, candidate

    def gen_media(self):
        a, rng = self.a, self.rng
        weights = [k[0] for k in MEDIA_KINDS]
        target_rows = a.media
        target_cand = a.candidates
        made = cand = 0
        n17 = 0

        def done():
            if target_cand is not None:
                return cand >= target_cand
            return made >= target_rows

        while not done():
            local = rng.random() < 0.10
            pool = self.local_accounts if local else self.remote_accounts
            account = rng.choices(pool, cum_weights=self.local_cum if local else self.remote_cum)[0]
            legacy_17 = n17 < 8 and rng.random() < 0.003
            if legacy_17:
                n17 += 1
                created = dt.datetime(2017, 1, 1) + dt.timedelta(
                    seconds=rng.randint(0, 480 * 86400))
            elif a.media_days:
                created = self.age(*a.media_days)
            else:
                r = rng.random()
                lo, hi = ((0, 7) if r < 0.30 else (7, 14) if r < 0.42 else
                          (14, 60) if r < 0.67 else (60, 420))
                created = self.age(lo, hi)
            attached = rng.random() < 0.9
            group = rng.choices([1, 2, 3, 4], [60, 20, 10, 10])[0] if attached else 1
            status_id = None
            if attached:
                status_id = self.status_ids.at(created)
                uri_host = account["domain"] or LOCAL_DOMAIN
                self.rows["statuses"].append({
                    "id": status_id,
                    "uri": f"https://{uri_host}/users/{account['username']}/statuses/{status_id}",
                    "url": f"https://{uri_host}/@{account['username']}/{status_id}",
                    "text": "a post", "account_id": account["id"], "visibility": 0,
                    "local": local, "ordered_media_attachment_ids": [],
                    "created_at": created, "updated_at": created})
            kind = MEDIA_KINDS[rng.choices(range(len(MEDIA_KINDS)), weights)[0]]
            for g in range(group):
                if done():
                    break
                _, c = self.media_row(account, created + dt.timedelta(milliseconds=g),
                                      status_id, kind, legacy_17)
                made += 1
                cand += int(c)
                if status_id:
                    self.rows["statuses"][-1]["ordered_media_attachment_ids"].append(
                        self.rows["media_attachments"][-1]["id"])
                kind = MEDIA_KINDS[rng.choices(range(len(MEDIA_KINDS)), weights[:3] + [0, 0, 0])[0]] \
                    if kind[1].startswith("image") else kind
        # interactions by local accounts on remote statuses (for --keep-interacted)
        remote_statuses = [s for s in self.rows["statuses"] if not s["local"]]
        for table, p in (("bookmarks", 0.02), ("favourites", 0.03)):
            seen = set()
            for s in remote_statuses:
                if rng.random() < p:
                    acc = rng.choice(self.local_accounts)["id"]
                    if (acc, s["id"]) in seen:
                        continue
                    seen.add((acc, s["id"]))
                    t = s["created_at"] + dt.timedelta(hours=1)
                    self.rows[table].append({"account_id": acc, "status_id": s["id"],
                                             "created_at": t, "updated_at": t})

    # -- emoji, cards, site uploads, orphans
    def gen_emoji(self):
        rng = self.rng
        for i in range(1, self.a.emoji + 1):
            local = i % 7 == 0
            domain = None if local else rng.choice(REMOTE_DOMAINS)
            ct = "image/gif" if rng.random() < 0.15 else "image/png"
            name = self.hexname("gif" if ct == "image/gif" else "png")
            version = 1 if local or rng.random() < 0.9 else None
            t = self.age(0, 700)
            size = self.size()
            self.rows["custom_emojis"].append({
                "id": i, "shortcode": f"emoji_{i}", "domain": domain,
                "uri": None if local else f"https://{domain}/emojis/{i}",
                "image_file_name": name, "image_content_type": ct, "image_file_size": size,
                "image_updated_at": t,
                "image_remote_url": None if local else f"https://{domain}/system/emoji/{name}",
                "image_storage_schema_version": version, "created_at": t, "updated_at": t})
            self.add_objects(attachment_objects("custom_emojis", "images", i, name, ct, version,
                                                not local, self.a.key_prefix), size, "emoji", False)
            self.bump("emoji")

    def gen_cards(self):
        rng = self.rng
        statuses = self.rows["statuses"]
        for i in range(1, self.a.cards + 1):
            old = rng.random() < 0.4
            t = self.age(181, 900) if old else self.age(0, 180)
            row = {"id": i, "url": f"https://news{i % 17}.example/article/{i}",
                   "title": f"Article {i}", "description": "",
                   "image_file_name": None, "image_content_type": None, "image_file_size": None,
                   "image_updated_at": None, "image_storage_schema_version": None,
                   "type": rng.choices([0, 1, 2], [85, 10, 5])[0], "width": 400, "height": 200,
                   "created_at": t, "updated_at": t}
            if rng.random() < 0.85:
                ct = rng.choices(["image/jpeg", "image/png", "image/gif"], [70, 25, 5])[0]
                name = self.hexname({"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}[ct])
                version = None if old and rng.random() < 0.5 else 1
                size = self.size()
                row.update({"image_file_name": name, "image_content_type": ct,
                            "image_file_size": size, "image_updated_at": t,
                            "image_storage_schema_version": version})
                self.add_objects(attachment_objects("preview_cards", "images", i, name, ct,
                                                    version, True, self.a.key_prefix),
                                 size, "card", False)
                self.bump("cards_with_image")
                if old:
                    self.bump("cards_older_180d")
            self.rows["preview_cards"].append(row)
            if statuses:
                for s in rng.sample(statuses, min(2, len(statuses))):
                    self.rows["preview_cards_statuses"].append(
                        {"preview_card_id": i, "status_id": s["id"]})
            self.bump("cards")

    def gen_site_uploads(self):
        t = self.now - dt.timedelta(days=500)
        for i, var in ((1, "thumbnail"), (2, "mascot")):
            name = self.hexname("png")
            size = self.size()
            self.rows["site_uploads"].append({
                "id": i, "var": var, "file_file_name": name, "file_content_type": "image/png",
                "file_file_size": size, "file_updated_at": t, "created_at": t, "updated_at": t})
            self.add_objects(attachment_objects("site_uploads", "files", i, name, "image/png",
                                                None, False, self.a.key_prefix, site_var=var),
                             size, "site_upload", False)

    def gen_orphans(self):
        rng = self.rng
        p = self.a.key_prefix + "/" if self.a.key_prefix else ""
        for i in range(self.a.orphans):
            kind = i % 4
            if kind == 0:   # media row that no longer exists
                mid = self.media_ids.at(self.age(30, 300))
                name = self.hexname("jpg")
                for style in ("original", "small"):
                    key = f"{p}cache/media_attachments/files/{id_partition(mid)}/{style}/{name}"
                    self.objects[key] = ("image/jpeg", self.size(), "orphan", False)
            elif kind == 1:  # avatar of an account that is gone
                aid = rng.randint(60000, 90000)
                key = f"{p}cache/accounts/avatars/{id_partition(aid)}/original/{self.hexname('png')}"
                self.objects[key] = ("image/png", self.size(), "orphan", False)
            elif kind == 2:  # stale copy of a remote media row at the legacy location
                rows = [m for m in self.rows["media_attachments"]
                        if m["remote_url"] and m["file_storage_schema_version"] == 1
                        and m["file_file_name"]]
                if not rows:
                    continue
                m = rng.choice(rows)
                key = (f"{p}media_attachments/files/{id_partition(m['id'])}/original/"
                       f"{m['file_file_name']}")
                self.objects[key] = (m["file_content_type"], self.size(), "orphan", False)
            else:            # stray file with an unrecognised shape
                key = f"{p}stray-{i}.txt"
                self.objects[key] = ("text/plain", self.size(), "orphan", False)
            self.bump("orphans")


# --------------------------------------------------------------------------- database


def copy_value(v):
    if v is None:
        return r"\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, dt.datetime):
        return ts(v)
    if isinstance(v, list):
        return "{" + ",".join(str(x) for x in v) + "}"
    s = str(v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def psql(url, sql=None, stdin_iter=None, capture=False):
    cmd = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-psqlrc"]
    if capture:
        cmd += ["-tA", "-c", sql]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cmd += ["-1", "-o", "/dev/null", "-f", "-"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, text=True)
    try:
        for chunk in stdin_iter:
            p.stdin.write(chunk)
        p.stdin.close()
    except BrokenPipeError:
        pass
    if p.wait() != 0:
        sys.exit(f"seed: psql failed (exit {p.returncode})")


def table_columns(url):
    out = psql(url, "SELECT table_name || '.' || column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public'", capture=True)
    cols = {}
    for line in out.split():
        t, c = line.split(".", 1)
        cols.setdefault(t, set()).add(c)
    return cols


def check_database(url):
    have = table_columns(url)
    if "media_attachments" not in have:
        sys.exit("seed: no media_attachments table: load tests/fixtures/mastodon-4.6.sql first")
    n = int(psql(url, "SELECT count(*) FROM media_attachments", capture=True).strip() or 0)
    if n:
        sys.exit(f"seed: media_attachments already has {n} rows; seed a fresh database")
    return have


def load_rows(url, gen, have, extra_sql=""):
    order = ["accounts", "statuses", "media_attachments", "custom_emojis", "preview_cards",
             "preview_cards_statuses", "site_uploads", "follows", "favourites", "bookmarks"]

    def chunks():
        yield "SET client_min_messages = warning;\n"
        for t in order:
            rows = gen.rows[t]
            if not rows:
                continue
            cols = sorted({c for r in rows for c in r} & have.get(t, set()))
            yield f"COPY {t} ({', '.join(cols)}) FROM STDIN;\n"
            buf = []
            for r in rows:
                buf.append("\t".join(copy_value(r.get(c)) for c in cols) + "\n")
                if len(buf) >= 5000:
                    yield "".join(buf)
                    buf = []
            yield "".join(buf) + "\\.\n"
        for t in ("preview_cards", "custom_emojis", "site_uploads", "follows", "favourites",
                  "bookmarks"):
            yield (f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                   f"GREATEST((SELECT max(id) FROM {t}), 1));\n")
        yield extra_sql
        yield "ANALYZE;\n"

    psql(url, stdin_iter=chunks())


# --------------------------------------------------------------------------- objects


def body_pool(seed):
    return random.Random(f"bodies-{seed}").randbytes((1 << 20) + 64 * 1024)


def upload(args, objects, bucket):
    """Uploads [(key, ct, size)] with a pool of threads; returns (count, bytes, seconds)."""
    pool = body_pool(args.seed)

    def body(key, size):
        off = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % (1 << 20)
        return pool[off:off + size]

    total = len(objects)
    if args.bulk_proxy:
        return upload_bulk(args, objects, bucket, pool)
    if args.fs_root:
        t0 = time.time()
        nbytes = 0
        for key, _ct, size in objects:
            path = os.path.join(args.fs_root, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(body(key, size))
            nbytes += size
        return total, nbytes, time.time() - t0

    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=args.endpoint, region_name=args.region,
        aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key,
        config=Config(max_pool_connections=args.threads, s3={"addressing_style": "path"},
                      retries={"max_attempts": 5, "mode": "standard"},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))
    q = queue.Queue(maxsize=args.threads * 4)
    lock = threading.Lock()
    state = {"done": 0, "bytes": 0, "errors": []}

    def worker():
        while True:
            item = q.get()
            if item is None:
                return
            key, ct, size = item
            try:
                # As Mastodon uploads (S3_PERMISSION defaults to public-read); stray keys
                # outside the layout stay private, as an admin's own files would be.
                acl = "public-read" if "/" in key else "private"
                client.put_object(Bucket=bucket, Key=key, Body=body(key, size), ContentType=ct,
                                  CacheControl="public, max-age=315576000, immutable", ACL=acl)
                with lock:
                    state["done"] += 1
                    state["bytes"] += size
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    state["errors"].append(f"{key}: {e}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    t0 = last = time.time()
    for item in objects:
        q.put(item)
        now = time.time()
        if now - last >= 10 and not args.quiet:
            last = now
            with lock:
                d = state["done"]
            print(f"seed: uploaded {d}/{total} objects to {bucket} ({d / (now - t0):.0f}/s)",
                  file=sys.stderr, flush=True)
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join()
    if state["errors"]:
        sys.exit(f"seed: {len(state['errors'])} uploads failed, first: {state['errors'][0]}")
    return state["done"], state["bytes"], time.time() - t0


def upload_bulk(args, objects, bucket, pool):
    """Puts [(key, ct, size)] straight into moto's backend through the control API of
    tests/support/s3server.py (`POST /__objects/<bucket>`, batches of 5000, not counted in
    the proxy's stats). Bodies are text of the exact size (a slice of the hex of the body
    pool); Content-Type, ACL and Cache-Control are not stored: for the prune and du
    benchmarks, which read keys and sizes only. Returns (count, bytes, seconds)."""
    import urllib.request

    text = pool.hex()
    t0 = time.time()
    done = nbytes = 0
    for i in range(0, len(objects), 5000):
        batch = []
        for key, _ct, size in objects[i:i + 5000]:
            off = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(),
                                 "big") % (1 << 20)
            batch.append([key, text[off:off + size]])
            nbytes += size
        req = urllib.request.Request(
            f"{args.bulk_proxy.rstrip('/')}/__objects/{bucket}", method="POST",
            data=json.dumps({"objects": batch}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            done += json.loads(r.read())["put"]
        if not args.quiet:
            print(f"seed: put {done}/{len(objects)} objects into {bucket} (bulk)",
                  file=sys.stderr, flush=True)
    return done, nbytes, time.time() - t0


def ensure_bucket(args, bucket):
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("s3", endpoint_url=args.endpoint, region_name=args.region,
                          aws_access_key_id=args.access_key,
                          aws_secret_access_key=args.secret_key)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


# --------------------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--database-url", required=True, help="psql connection string")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--media", type=int, default=3000, help="media rows (default 3000)")
    size.add_argument("--candidates", type=int,
                      help="instead of --media: add media rows until this many are prune "
                           "candidates at --days")
    ap.add_argument("--days", type=int, default=7,
                    help="retention used to count candidates (default 7)")
    ap.add_argument("--accounts", type=int, default=300)
    ap.add_argument("--emoji", type=int, default=60)
    ap.add_argument("--cards", type=int, default=200)
    ap.add_argument("--orphans", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--now", help="reference time, UTC, e.g. 2026-11-30T12:00:00 (default: now)")
    ap.add_argument("--objects", choices=["all", "candidates", "none"], default="all")
    ap.add_argument("--endpoint", help="S3 endpoint for uploads (s3server.py's moto URL)")
    ap.add_argument("--bucket")
    ap.add_argument("--create-bucket", action="store_true")
    ap.add_argument("--also-bucket", metavar="BUCKET", action="append", default=[],
                    help="also upload the prune candidates' objects into this bucket "
                         "(created if missing), e.g. for a peer tool to delete; repeatable")
    ap.add_argument("--keys-out", metavar="FILE",
                    help="write the keys of the candidates' uploaded objects, one per line")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY))
    ap.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY))
    ap.add_argument("--key-prefix", default="", help="S3_KEY_PREFIX to put before every key")
    ap.add_argument("--fs-root", help="write files below this directory instead of S3")
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--bulk-proxy", metavar="URL",
                    help="put objects straight into moto's backend through this "
                         "tests/support/s3server.py proxy's control API (POST "
                         "/__objects/<bucket>; sizes exact, no Content-Type or ACL): "
                         "fast seeding of 100k+ objects for the prune and du benchmarks")
    ap.add_argument("--object-sizes", default="1024:40960", metavar="MIN:MAX",
                    help="body size range in bytes of every object (default 1024:40960)")
    ap.add_argument("--media-days", metavar="LO:HI",
                    help="create every media row (but the few 17-digit ones) LO to HI days "
                         "ago, instead of the usual spread over 0-420 days; e.g. 7:8 for "
                         "a busy day of candidates just past --days 7")
    ap.add_argument("--retention-setting", type=int, metavar="DAYS",
                    help="also write settings.media_cache_retention_period = DAYS")
    ap.add_argument("--summary-json", metavar="FILE")
    ap.add_argument("--quiet", action="store_true", help="no upload progress on stderr")
    a = ap.parse_args(argv)
    a.key_prefix = a.key_prefix.strip("/")
    try:
        a.object_sizes = tuple(int(x) for x in a.object_sizes.split(":"))
        assert len(a.object_sizes) == 2 and 0 <= a.object_sizes[0] <= a.object_sizes[1]
        a.media_days = (tuple(int(x) for x in a.media_days.split(":")) if a.media_days
                        else None)
        assert a.media_days is None or (len(a.media_days) == 2
                                        and 0 <= a.media_days[0] < a.media_days[1])
    except (ValueError, AssertionError):
        ap.error("--object-sizes and --media-days take MIN:MAX (integers, MIN <= MAX; "
                 "--media-days LO < HI)")
    if a.object_sizes[1] > (1 << 20):
        ap.error("--object-sizes: at most 1 MiB per object")
    if a.bulk_proxy and (a.fs_root or not a.endpoint):
        ap.error("--bulk-proxy needs --endpoint (moto's URL, to create the buckets)")
    if a.fs_root and a.key_prefix:
        ap.error("--key-prefix applies to S3 only")
    if a.objects != "none" and not a.fs_root and not (a.endpoint and a.bucket):
        ap.error("uploading objects needs --endpoint and --bucket (or --fs-root, or --objects none)")
    if a.also_bucket and (a.fs_root or not a.endpoint):
        ap.error("--also-bucket needs --endpoint")
    a.now = (dt.datetime.fromisoformat(a.now).replace(tzinfo=None) if a.now
             else dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    return a


def main(argv=None):
    _self_test()
    a = parse_args(argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    have = check_database(a.database_url)
    g = Gen(a)
    g.has_thumb_version = "thumbnail_storage_schema_version" in have["media_attachments"]
    g.gen_accounts()
    g.gen_media()
    g.gen_emoji()
    g.gen_cards()
    g.gen_site_uploads()
    g.gen_orphans()
    extra = ""
    if a.retention_setting is not None:
        extra = ("DELETE FROM settings WHERE var = 'media_cache_retention_period';\n"
                 "INSERT INTO settings (var, value, created_at, updated_at) VALUES "
                 f"('media_cache_retention_period', E'--- {a.retention_setting}\\n', "
                 "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC');\n")
    load_rows(a.database_url, g, have, extra)
    t_db = time.time() - t0

    if a.objects == "all":
        todo = [(k, v[0], v[1]) for k, v in g.objects.items()]
    elif a.objects == "candidates":
        todo = [(k, v[0], v[1]) for k, v in g.objects.items() if v[3]]
    else:
        todo = []
    cand_objs = [(k, v[0], v[1]) for k, v in g.objects.items() if v[3]]
    n_up = n_bytes = 0
    t_up = 0.0
    if not a.fs_root and a.create_bucket and a.endpoint and a.bucket:
        ensure_bucket(a, a.bucket)
    if todo:
        n_up, n_bytes, t_up = upload(a, todo, a.bucket)
    t_also = time.time()
    for extra_bucket in a.also_bucket:
        ensure_bucket(a, extra_bucket)
        upload(a, cand_objs, extra_bucket)
    t_also = time.time() - t_also
    if a.keys_out:
        with open(a.keys_out, "w") as f:
            for k, _ct, _s in cand_objs:
                f.write(k + "\n")

    s = g.stats
    r = g.rows
    summary = {
        "media": s.get("media", 0), "media_remote": s.get("media_remote", 0),
        "media_local": s.get("media_local", 0),
        "media_remote_older_7d": s.get("media_remote_older_7d", 0),
        "media_legacy": s.get("media_legacy", 0),
        "media_with_thumbnail": s.get("media_with_thumbnail", 0),
        "thumbnails_pre_4_6": s.get("thumbnails_pre_4_6", 0),
        "media_thumb_only": s.get("media_thumb_only", 0),
        "media_pruned": s.get("media_pruned", 0),
        "media_17digit": s.get("media_17digit", 0),
        "candidates": s.get("candidates", 0), "candidate_days": a.days,
        "candidate_objects": len(cand_objs),
        "candidate_bytes": sum(sz for _k, _ct, sz in cand_objs),
        "missing_small_objects": g.missing,
        "missing_small_candidates": g.missing_candidates,
        "media_days": list(a.media_days) if a.media_days else None,
        "object_sizes": list(a.object_sizes),
        "upload": "bulk" if a.bulk_proxy else "fs" if a.fs_root else "put_object",
        "statuses": len(r["statuses"]),
        "accounts": len(r["accounts"]), "accounts_local": len(g.local_accounts),
        "avatars": s.get("avatars", 0), "headers": s.get("headers", 0),
        "follows": len(r["follows"]), "bookmarks": len(r["bookmarks"]),
        "favourites": len(r["favourites"]),
        "emoji": s.get("emoji", 0), "cards": s.get("cards", 0),
        "cards_with_image": s.get("cards_with_image", 0),
        "cards_older_180d": s.get("cards_older_180d", 0),
        "site_uploads": len(r["site_uploads"]), "orphans": s.get("orphans", 0),
        "objects_planned": len(g.objects), "objects_uploaded": n_up, "bytes_uploaded": n_bytes,
        "objects_mode": a.objects, "seconds_db": round(t_db, 1), "seconds_upload": round(t_up, 1),
        "seconds_upload_also_buckets": round(t_also, 1),
        "target": a.fs_root or (f"s3://{a.bucket}" if a.bucket else "-"),
    }
    if a.summary_json:
        with open(a.summary_json, "w") as f:
            json.dump(summary, f, indent=1)
    x = summary
    print(f"seeded: media {x['media']} (remote {x['media_remote']}, {x['media_remote_older_7d']} "
          f"older than 7d, {x['candidates']} prune candidates at {a.days}d, legacy "
          f"{x['media_legacy']}, thumbnails {x['media_with_thumbnail']} ({x['thumbnails_pre_4_6']} "
          f"pre-4.6), thumbnail-only {x['media_thumb_only']}, already pruned {x['media_pruned']}, "
          f"17-digit ids {x['media_17digit']}; local {x['media_local']}), statuses {x['statuses']}, "
          f"accounts {x['accounts']} ({x['accounts_local']} local, {x['avatars']} avatars, "
          f"{x['headers']} headers), follows {x['follows']}, emoji {x['emoji']}, cards {x['cards']} "
          f"({x['cards_older_180d']} older than 180d), site uploads {x['site_uploads']}, orphans "
          f"{x['orphans']}; objects {n_up} of {x['objects_planned']} ({a.objects}; "
          f"{x['missing_small_objects']} small styles left missing), {n_bytes / 1048576:.1f} MiB "
          f"to {x['target']} in {t_up:.1f}s ({(n_up / t_up) if t_up else 0:.0f}/s); database "
          f"{t_db:.1f}s", flush=True)


if __name__ == "__main__":
    main()
