#!/usr/bin/env python3
"""Independent model of the Atelier API contract and data format, checked against a live server.

Written from the API contract and the CSV data format alone, without reading
this server's code, so that it shares none of the server's mistakes. `tests/contract_model.rs`
runs it against a server loaded from a generated data set; by hand:

Usage: python3 tests/model/contract_model.py CSV_DIR [--base http://127.0.0.1:3000] [--sample 300]
                                 [--seed 1234] [--threads 8] [--show 3] [--json-out FILE]

Exits 1 if any mismatch class is found (informational lines, choices the contract leaves open,
do not count).

Reads the CSV files with a quirk-aware parser (`null`, quoted or not -> None,
unbalanced quote in a line -> closing quote added, 0/1 and true/false booleans, epoch-ms dates,
dangling rows dropped), computes the exact JSON body the contract prescribes for each GET
endpoint, fetches the same from the server (GET only), and compares structurally:
values, JSON types (int vs str vs bool vs null), and key order. Prints mismatch classes.
"""
import argparse
import collections
import concurrent.futures as cf
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from fractions import Fraction
from decimal import Decimal, ROUND_HALF_UP

# --------------------------------------------------------------------------- CSV reading

def parse_line(line):
    """Split one CSV line; returns list of (text, was_quoted). An unterminated quoted field
    runs to end of line (== the 'append a closing quote' repair)."""
    out = []
    i = 0
    n = len(line)
    while True:
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while True:
                j = line.find('"', i)
                if j < 0:
                    buf.append(line[i:])
                    i = n
                    break
                buf.append(line[i:j])
                if j + 1 < n and line[j + 1] == '"':
                    buf.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            out.append((''.join(buf), True))
            j = line.find(',', i)
            if j < 0:
                break
            i = j + 1
        else:
            j = line.find(',', i)
            if j < 0:
                out.append((line[i:], False))
                break
            out.append((line[i:j], False))
            i = j + 1
    return out


REPAIRED = collections.defaultdict(list)


def read_csv(d, name):
    path = os.path.join(d, name)
    # Bytes that are not UTF-8 read as U+FFFD, and a NUL (which no text column can hold) is
    # dropped: one bad byte must not cost its row.
    with open(path, encoding='utf-8', errors='replace', newline='') as fh:
        header = None
        seen = set()
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip('\n').rstrip('\r').replace('\x00', '')
            if header is None:
                header = line.split(',')
                continue
            if not line:
                continue
            if line.count('"') % 2:
                REPAIRED[name].append(lineno)
                line = line + '"'
            cells = parse_line(line)
            if len(cells) != len(header):
                REPAIRED[name + ':skipped'].append(lineno)
                continue
            # A row that reuses an id is malformed: the first one stands.
            if cells[0][0] in seen:
                REPAIRED[name + ':duplicate'].append(lineno)
                continue
            seen.add(cells[0][0])
            # The format: the `null` token is SQL NULL, "never the string "null" in the API",
            # so a quoted one is read as NULL too.
            yield [None if v == 'null' else v for v, q in cells]


def rating(v):
    # A rating is 1 to 5 (the contract's); any other makes its row malformed.
    n = int(v)
    if not 1 <= n <= 5:
        raise ValueError(v)
    return n


def to_bool(v):
    if v in ('1', 'true', 'TRUE', 'True', 't'):
        return True
    if v in ('0', 'false', 'FALSE', 'False', 'f'):
        return False
    raise ValueError(v)


def iso(ms):
    ms = int(ms)
    d = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
    return d.strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (ms % 1000)


def price(v):
    # integer dollars (or a decimal) -> "140.00"
    return str(Decimal(v).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP))


def pg_avg(values):
    """PostgreSQL avg() over integers for values 1..5: numeric with 16 decimal places,
    rounded half away from zero."""
    f = Fraction(sum(values), len(values))
    # exact rounding: scale by 10^16
    scaled = f * 10 ** 16
    fl = scaled.numerator // scaled.denominator
    rem = scaled - fl
    if rem * 2 >= 1:
        fl += 1
    s = str(fl).rjust(17, '0')
    return s[:-16] + '.' + s[-16:]


# --------------------------------------------------------------------------- the model

class Model:
    @contextlib.contextmanager
    def skipping(self, name):
        """Skips the row read in its block if a field is not of its type (a malformed row),
        as the format says, counting it."""
        try:
            yield
        except (ValueError, TypeError, IndexError):
            self.dropped[name + ' malformed'] += 1

    def __init__(self, d):
        self.dropped = collections.Counter()
        P = self.products = {}
        for r in read_csv(d, 'product.csv'):
            with self.skipping('product.csv'):
                P[int(r[0])] = dict(id=int(r[0]), name=r[1], slogan=r[2], description=r[3],
                                    category=r[4], default_price=r[5])
        self.pids = sorted(P)
        self.features = collections.defaultdict(list)
        for r in read_csv(d, 'features.csv'):
            with self.skipping('features.csv'):
                pid = int(r[1])
                if pid not in P:
                    self.dropped['features'] += 1
                    continue
                self.features[pid].append((int(r[0]), r[2], r[3]))
        self.styles = collections.defaultdict(list)
        S = self.style_by_id = {}
        for r in read_csv(d, 'styles.csv'):
            with self.skipping('styles.csv'):
                pid = int(r[1])
                if pid not in P:
                    self.dropped['styles'] += 1
                    continue
                s = dict(id=int(r[0]), pid=pid, name=r[2], sale=r[3], orig=r[4], default=to_bool(r[5]))
                S[s['id']] = s
                self.styles[pid].append(s)
        self.photos = collections.defaultdict(list)
        for r in read_csv(d, 'photos.csv'):
            with self.skipping('photos.csv'):
                sid = int(r[1])
                if sid not in S:
                    self.dropped['photos'] += 1
                    continue
                self.photos[sid].append((int(r[0]), r[2], r[3]))  # url, thumbnail
        self.skus = collections.defaultdict(list)
        for r in read_csv(d, 'skus.csv'):
            with self.skipping('skus.csv'):
                sid = int(r[1])
                if sid not in S:
                    self.dropped['skus'] += 1
                    continue
                self.skus[sid].append((int(r[0]), r[2], None if r[3] is None else int(r[3])))
        self.related = collections.defaultdict(list)
        self.related_raw = collections.defaultdict(list)
        for r in read_csv(d, 'related.csv'):
            with self.skipping('related.csv'):
                cur, rel = int(r[1]), int(r[2])
                self.related_raw[cur].append(rel)
                if cur not in P or rel not in P:
                    self.dropped['related'] += 1
                    continue
                self.related[cur].append((int(r[0]), rel))
        # reviews
        R = self.review_by_id = {}
        self.reviews = collections.defaultdict(list)
        for r in read_csv(d, 'reviews.csv'):
            with self.skipping('reviews.csv'):
                pid = int(r[1])
                if pid not in P:
                    self.dropped['reviews'] += 1
                    continue
                rv = dict(id=int(r[0]), pid=pid, rating=rating(r[2]), date=int(r[3]), summary=r[4], body=r[5],
                          recommend=to_bool(r[6]), reported=to_bool(r[7]), name=r[8], email=r[9],
                          response=r[10], helpfulness=int(r[11]))
                R[rv['id']] = rv
                self.reviews[pid].append(rv)
        self.review_photos = collections.defaultdict(list)
        for r in read_csv(d, 'reviews_photos.csv'):
            with self.skipping('reviews_photos.csv'):
                rid = int(r[1])
                if rid not in R:
                    self.dropped['reviews_photos'] += 1
                    continue
                self.review_photos[rid].append((int(r[0]), r[2]))
        C = self.char_by_id = {}
        self.chars = collections.defaultdict(list)
        for r in read_csv(d, 'characteristics.csv'):
            with self.skipping('characteristics.csv'):
                pid = int(r[1])
                if pid not in P:
                    self.dropped['characteristics'] += 1
                    continue
                c = dict(id=int(r[0]), pid=pid, name=r[2])
                C[c['id']] = c
                self.chars[pid].append(c)
        self.char_reviews = collections.defaultdict(list)
        for r in read_csv(d, 'characteristic_reviews.csv'):
            with self.skipping('characteristic_reviews.csv'):
                cid, rid = int(r[1]), int(r[2])
                if cid not in C or rid not in R:
                    self.dropped['characteristic_reviews'] += 1
                    continue
                self.char_reviews[cid].append((rid, rating(r[3])))
        # Q&A
        Q = self.question_by_id = {}
        self.questions = collections.defaultdict(list)
        for r in read_csv(d, 'questions.csv'):
            with self.skipping('questions.csv'):
                pid = int(r[1])
                if pid not in P:
                    self.dropped['questions'] += 1
                    continue
                q = dict(id=int(r[0]), pid=pid, body=r[2], date=int(r[3]), name=r[4], email=r[5],
                         reported=to_bool(r[6]), helpful=int(r[7]))
                Q[q['id']] = q
                self.questions[pid].append(q)
        A = self.answer_by_id = {}
        self.answers = collections.defaultdict(list)
        for r in read_csv(d, 'answers.csv'):
            with self.skipping('answers.csv'):
                qid = int(r[1])
                if qid not in Q:
                    self.dropped['answers'] += 1
                    continue
                a = dict(id=int(r[0]), qid=qid, body=r[2], date=int(r[3]), name=r[4], email=r[5],
                         reported=to_bool(r[6]), helpful=int(r[7]))
                A[a['id']] = a
                self.answers[qid].append(a)
        self.answer_photos = collections.defaultdict(list)
        for r in read_csv(d, 'answers_photos.csv'):
            with self.skipping('answers_photos.csv'):
                aid = int(r[1])
                if aid not in A:
                    self.dropped['answers_photos'] += 1
                    continue
                self.answer_photos[aid].append((int(r[0]), r[2]))
        for dct in (self.features, self.photos, self.skus, self.related, self.review_photos,
                    self.answer_photos):
            for k in dct:
                dct[k].sort(key=lambda t: t[0])
        for dct in (self.styles, self.chars):
            for k in dct:
                dct[k].sort(key=lambda t: t['id'])

    # ---- products
    def product_list_item(self, p):
        return {"id": p['id'], "name": p['name'], "slogan": p['slogan'], "description": p['description'],
                "category": p['category'], "default_price": price(p['default_price'])}

    def get_products(self, page=1, count=5):
        off = (page - 1) * count
        return [self.product_list_item(self.products[i]) for i in self.pids[off:off + count]]

    def get_product(self, pid):
        p = self.products.get(pid)
        if p is None:
            return 404, None
        o = self.product_list_item(p)
        o["features"] = [{"feature": f, "value": v} for _, f, v in self.features.get(pid, [])]
        return 200, o

    def get_styles(self, pid):
        if pid not in self.products:
            return 404, None
        res = []
        for s in self.styles.get(pid, []):
            sale = s['sale']
            sale = None if (sale is None or Decimal(sale) == 0) else price(sale)
            ph = [{"thumbnail_url": t, "url": u} for _, u, t in self.photos.get(s['id'], [])]
            if not ph:
                ph = [{"thumbnail_url": None, "url": None}]
            sk = {str(i): {"quantity": q, "size": z} for i, z, q in self.skus.get(s['id'], [])}
            if not sk:
                sk = {"null": {"quantity": None, "size": None}}
            res.append({"style_id": s['id'], "name": s['name'], "original_price": price(s['orig']),
                        "sale_price": sale, "default?": s['default'], "photos": ph, "skus": sk})
        return 200, {"product_id": str(pid), "results": res}

    def get_related(self, pid):
        if pid not in self.products:
            return 404, None
        return 200, [rel for _, rel in self.related.get(pid, [])]

    # ---- reviews
    def visible_reviews(self, pid):
        return [r for r in self.reviews.get(pid, []) if not r['reported']]

    def get_reviews(self, pid, sort='relevant', page=1, count=5):
        rs = self.visible_reviews(pid)
        s = (sort or 'relevant').lower()
        if s == 'newest':
            key = lambda r: (-r['date'], -r['id'])
        else:  # helpful, relevant (contract default), unknown
            key = lambda r: (-r['helpfulness'], -r['date'], -r['id'])
        rs = sorted(rs, key=key)
        off = (page - 1) * count
        out = []
        for r in rs[off:off + count]:
            out.append({"review_id": r['id'], "rating": r['rating'], "summary": r['summary'],
                        "recommend": r['recommend'], "response": r['response'], "body": r['body'],
                        "date": iso(r['date']), "reviewer_name": r['name'], "helpfulness": r['helpfulness'],
                        "photos": [{"id": i, "url": u} for i, u in self.review_photos.get(r['id'], [])]})
        return 200, {"product": str(pid), "page": off, "count": count, "results": out}

    def get_meta(self, pid):
        rs = self.visible_reviews(pid)
        vis = {r['id'] for r in rs}
        ratings = collections.Counter(r['rating'] for r in rs)
        rec = collections.Counter(r['recommend'] for r in rs)
        chars = {}
        for c in self.chars.get(pid, []):
            vals = [v for rid, v in self.char_reviews.get(c['id'], []) if rid in vis]
            chars[c['name']] = {"id": c['id'], "value": pg_avg(vals) if vals else None}
        return 200, {"product_id": str(pid),
                     "ratings": {str(k): str(ratings[k]) for k in sorted(ratings) if ratings[k]},
                     "recommended": {"false": str(rec[False]), "true": str(rec[True])},
                     "characteristics": chars}

    # ---- Q&A
    def answers_sorted(self, qid):
        a = [x for x in self.answers.get(qid, []) if not x['reported']]
        return sorted(a, key=lambda x: (-x['helpful'], -x['date'], -x['id']))

    def get_questions(self, pid, page=1, count=5):
        qs = [q for q in self.questions.get(pid, []) if not q['reported']]
        qs.sort(key=lambda q: (-q['helpful'], -q['date'], -q['id']))
        off = (page - 1) * count
        out = []
        for q in qs[off:off + count]:
            ans = {}
            # key order is not fixed by the contract; model uses answer-id order
            for a in sorted(self.answers_sorted(q['id']), key=lambda x: x['id']):
                ans[str(a['id'])] = {"id": a['id'], "body": a['body'], "date": iso(a['date']),
                                     "answerer_name": a['name'], "helpfulness": a['helpful'],
                                     "photos": [u for _, u in self.answer_photos.get(a['id'], [])]}
            out.append({"question_id": q['id'], "question_body": q['body'], "question_date": iso(q['date']),
                        "asker_name": q['name'], "question_helpfulness": q['helpful'], "reported": False,
                        "answers": ans})
        return 200, {"product_id": str(pid), "results": out}

    def get_answers(self, qid, page=1, count=5):
        q = self.question_by_id.get(qid)
        if q is None:
            return 404, None
        a = self.answers_sorted(qid)
        off = (page - 1) * count
        out = [{"answer_id": x['id'], "body": x['body'], "date": iso(x['date']), "answerer_name": x['name'],
                "helpfulness": x['helpful'],
                "photos": [{"id": i, "url": u} for i, u in self.answer_photos.get(x['id'], [])]}
               for x in a[off:off + count]]
        return 200, {"question": str(qid), "page": page, "count": count, "results": out}


# --------------------------------------------------------------------------- HTTP

class Client:
    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port or 80
        self.local = threading.local()

    def get(self, path, method='GET'):
        for attempt in range(3):
            c = getattr(self.local, 'c', None)
            if c is None:
                c = self.local.c = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                c.request(method, path, headers={'Authorization': 'model-check'})
                r = c.getresponse()
                body = r.read()
                return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.c = None
                if attempt == 2:
                    raise


# --------------------------------------------------------------------------- comparison

def jtype(v):
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'bool'
    if isinstance(v, int):
        return 'int'
    if isinstance(v, float):
        return 'float'
    if isinstance(v, str):
        return 'str'
    if isinstance(v, list):
        return 'array'
    return 'object'


def gen(path):
    return path


def compare(exp, got, path, out, ordered_keys=True):
    """Append (generic_path, kind, concrete_path, exp, got) to out."""
    te, tg = jtype(exp), jtype(got)
    if te != tg:
        out.append((path[1], 'type %s vs %s' % (te, tg), path[0], exp, got))
        return
    if te == 'object':
        ke, kg = list(exp.keys()), list(got.keys())
        se, sg = set(ke), set(kg)
        for k in ke:
            if k not in sg:
                out.append((path[1] + '.' + gkey(path[1], k), 'missing key', path[0] + '.' + k, exp[k], None))
        for k in kg:
            if k not in se:
                out.append((path[1] + '.' + gkey(path[1], k), 'extra key', path[0] + '.' + k, None, got[k]))
        common_e = [k for k in ke if k in sg]
        common_g = [k for k in kg if k in se]
        if common_e != common_g:
            out.append((path[1], 'key order', path[0], common_e, common_g))
        for k in common_e:
            compare(exp[k], got[k], (path[0] + '.' + k, path[1] + '.' + gkey(path[1], k)), out)
    elif te == 'array':
        if len(exp) != len(got):
            out.append((path[1], 'array length', path[0], len(exp), len(got)))
        for i, (a, b) in enumerate(zip(exp, got)):
            compare(a, b, (path[0] + '[%d]' % i, path[1] + '[]'), out)
    else:
        if exp != got:
            out.append((path[1], 'value', path[0], exp, got))


DYNAMIC_PARENTS = ('.skus', '.answers', '.ratings', '.characteristics')


def gkey(gparent, k):
    for d in DYNAMIC_PARENTS:
        if gparent.endswith(d):
            return '*'
    return k


# --------------------------------------------------------------------------- test plan

def pick_products(m, n, seed):
    rnd = random.Random(seed)
    sample = rnd.sample(m.pids, min(n, len(m.pids)))
    edge = collections.OrderedDict()

    def add(tag, pid):
        if pid is not None and pid not in edge:
            edge[pid] = tag
    add('first', m.pids[0])
    add('last', m.pids[-1])
    nostyle = [p for p in m.pids if not m.styles.get(p)]
    for p in nostyle[:3]:
        add('no styles', p)
    for p in m.pids:
        for s in m.styles.get(p, []):
            if not m.photos.get(s['id']):
                add('style w/o photos', p)
                break
    cnt = 0
    for p in m.pids:
        if any(not m.skus.get(s['id']) for s in m.styles.get(p, [])):
            add('style w/o skus', p); cnt += 1
            if cnt >= 3:
                break
    cnt = 0
    for p in m.pids:
        if any(s['sale'] is not None and Decimal(s['sale']) == 0 for s in m.styles.get(p, [])):
            add('sale_price 0', p); cnt += 1
            if cnt >= 3:
                break
    cnt = 0
    for p in m.pids:
        if any(s['sale'] not in (None, '0') for s in m.styles.get(p, [])):
            add('sale price', p); cnt += 1
            if cnt >= 3:
                break
    # broken photo lines: style ids of repaired rows are found by re-reading
    for p in m.pids:
        if not m.reviews.get(p):
            add('no reviews', p)
            break
    cnt = 0
    for p in m.pids:
        rs = m.reviews.get(p, [])
        if rs and all(r['reported'] for r in rs):
            add('all reviews reported', p); cnt += 1
            if cnt >= 2:
                break
    cnt = 0
    for p in m.pids:
        if any(r['reported'] for r in m.reviews.get(p, [])):
            add('some reviews reported', p); cnt += 1
            if cnt >= 5:
                break
    by_n = sorted(m.pids, key=lambda p: -len(m.reviews.get(p, [])))
    for p in by_n[:5]:
        add('many reviews', p)
    # tied (helpfulness,date) or tied date
    cnt = 0
    for p in m.pids:
        rs = m.visible_reviews(p)
        c = collections.Counter(r['date'] for r in rs)
        c2 = collections.Counter((r['helpfulness'], r['date']) for r in rs)
        if any(v > 1 for v in c.values()) or any(v > 1 for v in c2.values()):
            add('tied review dates', p); cnt += 1
            if cnt >= 8:
                break
    cnt = 0
    for p in m.pids:
        if any(v is None for _, _, v in m.features.get(p, [])):
            add('null feature value', p); cnt += 1
            if cnt >= 3:
                break
    for p in m.pids:
        if not m.features.get(p):
            add('no features', p)
            break
    cnt = 0
    for p in m.pids:
        raw = m.related_raw.get(p, [])
        if 0 in raw or any(x not in m.products for x in raw):
            add('related with 0/dangling', p); cnt += 1
            if cnt >= 3:
                break
    cnt = 0
    for p in m.pids:
        rel = [x for _, x in m.related.get(p, [])]
        if len(rel) != len(set(rel)):
            add('related duplicate pair', p); cnt += 1
            if cnt >= 3:
                break
    for p in m.pids:
        if not m.related.get(p):
            add('no related', p)
            break
    cnt = 0
    for p in m.pids:
        rs = m.visible_reviews(p)
        vis = {r['id'] for r in rs}
        if rs and any(not any(rid in vis for rid, _ in m.char_reviews.get(c['id'], [])) for c in m.chars.get(p, [])):
            add('unrated characteristic', p); cnt += 1
            if cnt >= 3:
                break
    cnt = 0
    for p in m.pids:
        if any(q['reported'] for q in m.questions.get(p, [])):
            add('reported question', p); cnt += 1
            if cnt >= 3:
                break
    cnt = 0
    for p in m.pids:
        if any(a['reported'] for q in m.questions.get(p, []) for a in m.answers.get(q['id'], [])):
            add('reported answer', p); cnt += 1
            if cnt >= 3:
                break
    for p in m.pids:
        if not m.questions.get(p):
            add('no questions', p)
            break
    by_q = sorted(m.pids, key=lambda p: -len(m.questions.get(p, [])))
    for p in by_q[:3]:
        add('many questions', p)
    for p in m.pids:
        if any(r['response'] is not None for r in m.reviews.get(p, [])):
            add('review response', p)
            break
    for p in m.pids:
        if any(a['email'] is None for q in m.questions.get(p, []) for a in m.answers.get(q['id'], [])):
            add('seller answer (null email)', p)
            break
    return sample, edge


def unknown_id(ids):
    """An ID (1 ..= 2^63-1) that is none of `ids`: past the largest, or below the top where the
    largest is near it."""
    unk = max(ids) + 1000
    if unk > 2**63 - 1:
        unk = next(i for i in range(2**63 - 1, 0, -1) if i not in ids)
    return unk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('csv_dir')
    ap.add_argument('--base', default='http://127.0.0.1:3100')
    ap.add_argument('--sample', type=int, default=300)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--threads', type=int, default=8)
    ap.add_argument('--show', type=int, default=2)
    ap.add_argument('--json-out')
    a = ap.parse_args()
    t0 = time.time()
    m = Model(a.csv_dir)
    print('loaded in %.1fs; dropped dangling: %s; repaired lines: %s' % (
        time.time() - t0, dict(m.dropped), {k: v for k, v in REPAIRED.items()}))
    cl = Client(a.base)
    sample, edge = pick_products(m, a.sample, a.seed)
    # styles touched by repaired photo lines
    rep_lines = set(REPAIRED.get('photos.csv', []))
    if rep_lines:
        with open(os.path.join(a.csv_dir, 'photos.csv'), encoding='utf-8') as fh:
            for ln, raw in enumerate(fh, 1):
                if ln in rep_lines:
                    sid = int(raw.split(',')[1])
                    if sid in m.style_by_id:
                        edge.setdefault(m.style_by_id[sid]['pid'], 'repaired photo line')
    pids = list(dict.fromkeys(list(edge) + sample))
    print('products: %d random (seed %d) + %d edge: %s' % (len(sample), a.seed, len(edge),
          dict(collections.Counter(edge.values()))))

    checks = []  # (endpoint, path, expected_status, expected_body)
    np = len(m.pids)
    last_page = (np + 4) // 5
    for pg, ct in [(1, 5), (2, 5), (3, 7), (1, 100), (17, 50), (last_page, 5), (last_page + 1, 5), (1, 10000),
                   (2, 9007199254740991)]:
        checks.append(('GET /products', '/products?page=%d&count=%d' % (pg, ct), 200, m.get_products(pg, ct)))
    checks.append(('GET /products', '/products', 200, m.get_products()))
    for p in pids:
        st, b = m.get_product(p)
        checks.append(('GET /products/:id', '/products/%d' % p, st, b))
        st, b = m.get_styles(p)
        checks.append(('GET /products/:id/styles', '/products/%d/styles' % p, st, b))
        st, b = m.get_related(p)
        checks.append(('GET /products/:id/related', '/products/%d/related' % p, st, b))
        for sort in ('newest', 'helpful', 'relevant'):
            st, b = m.get_reviews(p, sort, 1, 10000)
            checks.append(('GET /reviews sort=%s' % sort, '/reviews?product_id=%d&sort=%s&count=10000' % (p, sort), st, b))
        st, b = m.get_reviews(p, 'relevant', 1, 5)
        checks.append(('GET /reviews default', '/reviews?product_id=%d' % p, st, b))
        st, b = m.get_reviews(p, 'newest', 2, 3)
        checks.append(('GET /reviews paged', '/reviews?product_id=%d&sort=newest&page=2&count=3' % p, st, b))
        st, b = m.get_meta(p)
        checks.append(('GET /reviews/meta', '/reviews/meta?product_id=%d' % p, st, b))
        st, b = m.get_questions(p)
        checks.append(('GET /qa/questions default', '/qa/questions?product_id=%d' % p, st, b))
        st, b = m.get_questions(p, 1, 10000)
        checks.append(('GET /qa/questions all', '/qa/questions?product_id=%d&count=10000' % p, st, b))
        st, b = m.get_questions(p, 2, 2)
        checks.append(('GET /qa/questions paged', '/qa/questions?product_id=%d&page=2&count=2' % p, st, b))
        for q in m.questions.get(p, [])[:4]:
            st, b = m.get_answers(q['id'])
            checks.append(('GET /qa/questions/:id/answers', '/qa/questions/%d/answers' % q['id'], st, b))
            st, b = m.get_answers(q['id'], 1, 10000)
            checks.append(('GET /qa/questions/:id/answers all', '/qa/questions/%d/answers?count=10000' % q['id'], st, b))
            st, b = m.get_answers(q['id'], 2, 1)
            checks.append(('GET /qa/questions/:id/answers paged', '/qa/questions/%d/answers?page=2&count=1' % q['id'], st, b))
    # edge / error cases
    unk = unknown_id(m.pids)
    E = [('/products/%d' % unk, 404), ('/products/999999999', 404), ('/products/%d/styles' % unk, 404),
         ('/products/%d/related' % unk, 404), ('/products/0', 404), ('/products/abc', 404),
         ('/products/99999999999999999999', 404),
         ('/qa/questions/999999999/answers', 404),
         ('/reviews', 422), ('/reviews?product_id=hello', 422), ('/reviews?product_id=null', 422),
         ('/reviews?product_id=5.55', 422), ('/reviews?product_id=-1', 422), ('/reviews?product_id=0', 422),
         ('/reviews?product_id=9223372036854775808', 422),
         ('/reviews/meta', 422), ('/reviews/meta?product_id=abc', 422), ('/reviews/meta?product_id=0', 422),
         ('/qa/questions', 422), ('/qa/questions?product_id=-1', 422), ('/qa/questions?product_id=5.55', 422),
         ('/products?page=0', 422), ('/products?count=0', 422), ('/products?page=-1', 422),
         ('/products?page=abc', 422), ('/products?count=1.5', 422),
         ('/reviews?product_id=1&page=0', 422), ('/reviews?product_id=1&count=x', 422),
         ('/qa/questions?product_id=1&count=0', 422), ('/qa/questions/1/answers?page=0', 422),
         ('/qa/questions/1/answers?count=-5', 422),
         ('/reviews?product_id=1&count=9007199254740991', 200),
         ('/products?page=2&count=99999999999999999999', 200),
         ('/products?page=9007199254740991&count=9007199254740991', 200),
         ('/reviews?product_id=1&page=9007199254740991&count=9007199254740991', 200),
         ('/nope', 404), ('/api/fec2/hr-rfp/products/1', 200), ('/products/1/', 200),
         ('/reviews/?product_id=1', 200), ('/reviews/meta/?product_id=1', 200),
         ('/qa/questions/?product_id=1', 200),
         ]
    for path, st in E:
        checks.append(('edge', path, st, None))
    # body checks for edge successes with known bodies
    checks.append(('GET /reviews unknown product', '/reviews?product_id=%d' % unk, 200, m.get_reviews(unk)[1]))
    checks.append(('GET /reviews/meta unknown product', '/reviews/meta?product_id=%d' % unk, 200, m.get_meta(unk)[1]))
    checks.append(('GET /qa/questions unknown product', '/qa/questions?product_id=%d' % unk, 200, m.get_questions(unk)[1]))
    checks.append(('GET /reviews max id', '/reviews?product_id=9223372036854775807', 200,
                   m.get_reviews(9223372036854775807)[1]))
    checks.append(('GET /reviews sort case', '/reviews?product_id=%d&sort=NEWEST&count=50' % by_reviews(m), 200,
                   m.get_reviews(by_reviews(m), 'newest', 1, 50)[1]))
    checks.append(('GET /reviews sort unknown', '/reviews?product_id=%d&sort=bogus&count=50' % by_reviews(m), 200,
                   m.get_reviews(by_reviews(m), 'relevant', 1, 50)[1]))
    checks.append(('GET /reviews page past end', '/reviews?product_id=%d&page=500&count=5' % by_reviews(m), 200,
                   m.get_reviews(by_reviews(m), 'relevant', 500, 5)[1]))
    checks.append(('GET /qa/questions page past end', '/qa/questions?product_id=1&page=500&count=5', 200,
                   m.get_questions(1, 500, 5)[1]))
    checks.append(('prefix route', '/api/fec2/hr-rfp/products/1/styles', 200, m.get_styles(1)[1]))
    # huge page/count echo (contract: "count echoes the requested count", "never overflow")
    for pg, ct in [(2, 99999999999999999999), (18446744073709551616, 1), (9007199254740991, 9007199254740991)]:
        checks.append(('GET /reviews huge page/count', '/reviews?product_id=1&page=%d&count=%d' % (pg, ct), 200,
                       m.get_reviews(1, 'relevant', pg, ct)[1]))
    q1 = min(m.question_by_id)
    for pg, ct in [(18446744073709551616, 1), (2, 99999999999999999999)]:
        checks.append(('GET /qa/questions/:id/answers huge page/count',
                       '/qa/questions/%d/answers?page=%d&count=%d' % (q1, pg, ct), 200, m.get_answers(q1, pg, ct)[1]))
    # reported question's answers (ambiguous per contract)
    repq = [q for q in m.question_by_id.values() if q['reported'] and m.answers.get(q['id'])]
    if repq:
        checks.append(('info: answers of reported question', '/qa/questions/%d/answers' % repq[0]['id'], None,
                       m.get_answers(repq[0]['id'])[1]))

    results = [None] * len(checks)

    def run(i):
        ep, path, st, body = checks[i]
        s, h, b = cl.get(path)
        results[i] = (s, h, b)

    t1 = time.time()
    with cf.ThreadPoolExecutor(a.threads) as ex:
        list(ex.map(run, range(len(checks))))
    print('%d requests in %.1fs' % (len(checks), time.time() - t1))

    classes = collections.OrderedDict()
    per_ep = collections.Counter()
    per_ep_ok = collections.Counter()
    infos = []

    def addc(key, ex):
        c = classes.setdefault(key, [0, []])
        c[0] += 1
        if len(c[1]) < a.show:
            c[1].append(ex)

    for (ep, path, st, body), (s, h, b) in zip(checks, results):
        per_ep[ep] += 1
        if st is None:
            infos.append((ep, path, s, b[:300]))
            continue
        if s != st:
            addc((ep, 'status', '%s vs %s' % (st, s)), (path, st, s, b[:200]))
            continue
        if st == 200:
            ct = h.get('content-type', '')
            if not ct.startswith('application/json'):
                addc((ep, 'content-type', ct), (path,))
        elif st in (404, 422):
            ct = h.get('content-type', '')
            want = {404: b'Not Found', 422: b'Error: invalid product_id provided'}[st]
            if 'product_id=' in path or st == 404:
                if st == 404 and b != want or (st == 422 and 'product_id' in path and
                                                  'page=' not in path and 'count=' not in path and b != want):
                    addc((ep, 'error body', str(st)), (path, want, b[:200]))
            if not ct.startswith('text/plain'):
                addc((ep, 'error content-type', ct), (path,))
        if body is None:
            per_ep_ok[ep] += 1
            continue
        try:
            got = json.loads(b, object_pairs_hook=collections.OrderedDict)
        except Exception as e:
            addc((ep, 'bad json', ''), (path, b[:200]))
            continue
        exp = json.loads(json.dumps(body), object_pairs_hook=collections.OrderedDict)
        diffs = []
        compare(exp, got, ('$', '$'), diffs)
        if not diffs:
            per_ep_ok[ep] += 1
            continue
        seen = set()
        for g, kind, cp, e, gv in diffs:
            k = (ep, g, kind)
            if k in seen:
                continue
            seen.add(k)
            addc(k, (path, cp, short(e), short(gv)))

    print('\n=== mismatch classes (%d) ===' % len(classes))
    for (ep, g, kind), (n, exs) in classes.items():
        print('\n[%s] %s  %s   (%d requests)' % (ep, g, kind, n))
        for ex in exs:
            print('   ', ' | '.join(str(x) for x in ex))
    print('\n=== informational ===')
    for x in infos:
        print('   ', x)
    print('\n=== per-endpoint: fully matching / compared ===')
    for ep in per_ep:
        print('  %-45s %5d / %5d' % (ep, per_ep_ok[ep], per_ep[ep]))
    print('total time %.1fs' % (time.time() - t0))
    if a.json_out:
        with open(a.json_out, 'w') as fh:
            json.dump({'classes': [[list(k), v[0], v[1]] for k, v in classes.items()]}, fh, indent=1, default=str)
    # Informational lines are choices the contract leaves open; a mismatch class fails.
    sys.exit(1 if classes else 0)


def by_reviews(m):
    return max(m.pids, key=lambda p: len(m.visible_reviews(p)))


def short(v):
    s = json.dumps(v)
    return s if len(s) <= 160 else s[:160] + '...'


if __name__ == '__main__':
    main()
