#!/usr/bin/env python3
"""Byte check: asks two running servers the same GETs and counts the answers that differ.

One is the server under test (precomputed, after writes); the other renders every body from
the database (`atelier serve --precompute none --cache-mb 0`), so that any difference is a
body the first one holds stale or wrong. For each product picked it asks the product, its
styles, related, reviews meta, its reviews in each sort (`relevant` page 1 of 5, `newest` a
random page of 5, 20 or 100, `helpful` whole), its questions at the default count, at a
random page and count and whole, and (with an ids file) three of its questions' answers. Exits 1 if any status or body differs.

    benches/byte-check.py http://127.0.0.1:3000 http://127.0.0.1:3001 SEED PRODUCTS [IDS_FILE]

With `GZIP=1` the server under test is asked with `Accept-Encoding: gzip`, and a gzip body it
sends is decoded by Python's own gzip before the comparison (the fresh server is asked plain).

Products are picked at random from IDS_FILE (one id a line: say, the products written to
during a load run, from `change_log`), or from 1 to MAX_ID (default 1000011) without one.
"""
import gzip
import http.client
import json
import os
import random
import sys
import urllib.parse


def connect(url):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)


def get(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    if response.getheader("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return response.status, body


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    tested, fresh = connect(sys.argv[1]), connect(sys.argv[2])
    random.seed(int(sys.argv[3]))
    picks = int(sys.argv[4])
    ids = None
    if len(sys.argv) == 6:
        with open(sys.argv[5]) as f:
            ids = [int(x) for x in f.read().split()]
        if not ids:
            sys.exit(f"no ids in {sys.argv[5]}")
    max_id = int(os.environ.get("MAX_ID", "1000011"))
    asked = {"Accept-Encoding": "gzip"} if os.environ.get("GZIP") == "1" else {}
    total = differ = 0

    def compare(path):
        nonlocal total, differ
        a, b = get(tested, path, asked), get(fresh, path)
        total += 1
        if a != b:
            differ += 1
            if differ <= 5:
                print("DIFF", path, a[0], b[0], a[1][:200], b[1][:200])

    for _ in range(picks):
        p = random.choice(ids) if ids else random.randint(1, max_id)
        for path in [
            f"/products/{p}",
            f"/products/{p}/styles",
            f"/products/{p}/related",
            f"/reviews/meta?product_id={p}",
            f"/reviews?product_id={p}&count=5&sort=relevant",
            f"/reviews?product_id={p}&sort=newest&page={random.randint(1, 30)}"
            f"&count={random.choice([5, 20, 100])}",
            f"/reviews?product_id={p}&sort=helpful&count=10000",
            f"/qa/questions?product_id={p}&count={random.choice([5, 100])}"
            f"&page={random.randint(1, 3)}",
            f"/qa/questions?product_id={p}&count=10000",
            f"/qa/questions?product_id={p}",
        ]:
            compare(path)
        if ids is not None:
            status, body = get(fresh, f"/qa/questions?product_id={p}&count=1000")
            if status == 200:
                for q in json.loads(body)["results"][:3]:
                    compare(f"/qa/questions/{q['question_id']}/answers?count=100")
    print(f"{total} requests, {differ} differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
