#!/usr/bin/env python3
"""What the precomputed catalog's bodies are made of, counted from a catalog snapshot.

A snapshot (`atelier serve --snapshot-dir DIR`, format 5 of src/cache/snapshot.rs and
src/render/stored.rs) lays every body of the catalog end to end, as the catalog keeps it, with
a few bytes of framing each. Counting its records gives what any in-memory layout of the same
catalog must hold, whatever its allocator or boxes: the kept bytes (gzip members, packed or
plain list items, lead pages) and their metadata (digests, item ends, another order's
positions).

    python3 benches/snapshot-bytes.py DIR/catalog.snapshot

Prints, per kind of record, the records, the kept bytes, the lead pages' share of them, the
metadata, the lists that are empty, and the bodies (or lead pages) written in a shared code;
sizes in MB (10^6 bytes); then the totals.
"""

import collections
import struct
import sys

MAGIC = b"atelier catalog\n"
KINDS = [
    "product",
    "styles",
    "related",
    "reviews meta",
    "reviews (helpful)",
    "reviews (newest)",
    "questions",
    "answers",
    "products pages",
]
PRODUCTS_PAGE = 8
JSON, GZIP, LIST, NOT_FOUND, REORDERED, PACKED, CODED = range(7)
ORDERED, LED = 2, 4
# A whole body's tag, and the bytes of its fields before its own (a digest; and a length; a
# shared code's kind).
WHOLE = {JSON: 0, GZIP: 8, PACKED: 12, CODED: 9}


def u32(buf, at):
    return struct.unpack_from("<I", buf, at)[0], at + 4


def count_records(frame, stats):
    at = 1
    while at < len(frame):
        kind = frame[at]
        at += 1 + (16 if kind == PRODUCTS_PAGE else 8)
        s = stats[KINDS[kind]]
        s["records"] += 1
        tag = frame[at]
        at += 1
        s["coded"] += tag == CODED
        if tag in WHOLE:
            # The fields before the bytes (digest; plain length), then the bytes.
            before = WHOLE[tag]
            n, at = u32(frame, at + before)
            at += n
            s["bytes"] += n
            s["meta"] += before
        elif tag == REORDERED:
            n, at = u32(frame, at)
            at += 4 * n
            s["meta"] += 4 * n
        elif tag == LIST:
            flags = frame[at]
            at += 1
            n, at = u32(frame, at)
            at += n
            s["bytes"] += n
            items, at = u32(frame, at)
            at += 4 * items
            s["meta"] += 4 * items
            s["empty"] += items == 0
            if flags & ORDERED:
                n, at = u32(frame, at)
                at += 4 * n
            if flags & LED:
                at += 8
                n, at = u32(frame, at)
                at += n + 8
                s["bytes"] += n
                s["lead"] += n
                s["meta"] += 8 + 8
                counted = frame[at]
                at += 1 + (8 if counted else 0)
                # The shared code's kind, 0 for none.
                s["coded"] += frame[at] != 0
                at += 1
        elif tag != NOT_FOUND:
            sys.exit(f"an unknown body tag {tag}: not a format-5 snapshot?")


def main(path):
    stats = collections.defaultdict(collections.Counter)
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            sys.exit(f"{path} is not a catalog snapshot")
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            length, _crc = struct.unpack("<II", head)
            frame = f.read(length)
            if frame[:1] == b"R":
                count_records(frame, stats)
    mb = lambda n: f"{n / 1e6:,.1f}"
    print(f"{'kind':<18} {'records':>11} {'bytes MB':>10} {'lead MB':>9} {'meta MB':>9} {'empty':>9} {'coded':>11}")
    total = collections.Counter()
    for kind in KINDS:
        s = stats.get(kind)
        if not s:
            continue
        total.update(s)
        print(f"{kind:<18} {s['records']:>11,} {mb(s['bytes']):>10} {mb(s['lead']):>9} {mb(s['meta']):>9} {s['empty']:>9,} {s['coded']:>11,}")
    print(f"{'total':<18} {total['records']:>11,} {mb(total['bytes']):>10} {mb(total['lead']):>9} {mb(total['meta']):>9} {total['empty']:>9,} {total['coded']:>11,}")
    print(f"kept bytes and metadata: {mb(total['bytes'] + total['meta'])} MB")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
