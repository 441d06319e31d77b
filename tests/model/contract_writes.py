#!/usr/bin/env python3
"""Usage: python3 tests/model/contract_writes.py CSV_DIR [--base http://127.0.0.1:3101] [--seed 7] [--products 24]
         [--threads 8] [--poll 2.0] [--show 2] [--journal FILE] [--json-out FILE]
         [--check-only] [--quarantine-dirty] [--no-final-scan]

Write-side companion of contract_model.py: an independent model of what every POST/PUT of the
Atelier API contract changes (written, like it, from the contract alone), checked against a live server that
was loaded from exactly CSV_DIR.  IT WRITES TO THE SERVER AT --base: point it only at a server
that is yours to change.

What it does:
  1. loads the read-only Model from CSV_DIR (contract_model.py, unchanged) and replays the journal
     of the writes earlier runs of this script made to the same server (--journal, default
     contract_writes_journal_HOST_PORT.json in the temp directory).  The journal is used only when all
     its probe reviews are on the server; none there = the server was reset, the journal is
     dropped; some = a state this model cannot follow, exit 2;
  2. scans every product's reviews/meta/questions against CSV + journal (loose: key order ignored);
     a product that differs is a mismatch (or, with --quarantine-dirty, e.g. after a lost journal,
     is recorded as quarantined and left out from then on); then checks the touched products'
     GETs strictly (baseline);
  3. sends a seeded burst of writes of every kind: POST /reviews (valid, boundary, invalid),
     PUT /reviews/:id/helpful|report, POST /qa/questions, POST /qa/questions/:id/answers,
     PUT /qa/questions/:id/helpful|report, PUT /qa/answers/:id/helpful|report, POST/GET /cart,
     POST /interactions, plus writes the contract says are refused (status, error text, and that
     they change nothing).  Every created row carries a token (MW<run tag>T<n>Z) in its text; the
     run tag keeps runs apart;
  4. applies each accepted write to the model; server-assigned ids/dates are learned from later
     GETs (found by token) and checked: ids new and increasing, photo ids likewise, dates
     ISO-8601 UTC with ms and within a few seconds of the request;
  5. after each phase polls every affected GET (up to --poll seconds: the server's cache refreshes
     asynchronously) until it matches the model strictly (values, JSON types, key order) and
     reports the lag; also through other URL spellings, and conditional GETs with pre-write ETags;
  6. scans all products again: an untouched product that changed is a mismatch.

Exits 1 if any mismatch class is found; "informational" lines (choices the contract leaves
open) do not count.  --check-only sends no writes (steps 1-2).  About 30 s for 10,000 products.
"""
import argparse
import tempfile
import collections
import concurrent.futures as cf
import datetime as dt
import http.client
import json
import os
import random
import re
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract_model as cm  # noqa: E402

ISO_RE = re.compile(r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$')
TOKEN = 'model-writes'
NOAUTH = object()
MSG = {'review': b'Error: Review body contains invalid entries',
       'question': b'Error: Question body contains invalid entries',
       'answer': b'Error: Answer body contains invalid entries'}
DATE_TOL = 3.0


# --------------------------------------------------------------------------- HTTP

class HC:
    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port or 80
        self.local = threading.local()

    def raw(self, method, path, body):
        """For an oversized body: the server may answer (413) and close before reading it all."""
        import socket
        s = socket.create_connection((self.host, self.port), timeout=30)
        try:
            s.sendall(('%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\n'
                       'Content-Length: %d\r\nConnection: close\r\n\r\n' % (method, path, self.host, TOKEN,
                                                                             len(body))).encode())
            try:
                for i in range(0, len(body), 65536):
                    s.sendall(body[i:i + 65536])
            except OSError:
                pass
            buf = b''
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    buf += d
            except OSError:
                pass
        finally:
            s.close()
        if not buf.startswith(b'HTTP/'):
            return -1, {}, b'no response'
        head, _, b = buf.partition(b'\r\n\r\n')
        lines = head.decode('latin-1').split('\r\n')
        h = dict((k.strip().lower(), v.strip()) for k, _, v in (x.partition(':') for x in lines[1:]))
        return int(lines[0].split()[1]), h, b

    def req(self, method, path, body=None, auth=TOKEN, ctype='application/json', headers=None):
        """body: None, bytes (sent raw) or a JSON-able object. Returns (status, headers, body)."""
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        hdr = dict(headers or {})
        if auth is not NOAUTH:
            hdr['Authorization'] = auth
        if body is not None and ctype:
            hdr['Content-Type'] = ctype
        if method in ('POST', 'PUT'):
            # a write never goes out on a reused keep-alive connection (which the server may have
            # closed meanwhile) since a failed write is not retried
            c = getattr(self.local, 'c', None)
            if c is not None:
                c.close()
                self.local.c = None
        for attempt in range(3):
            c = getattr(self.local, 'c', None)
            if c is None:
                c = self.local.c = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                c.request(method, path, body=body, headers=hdr)
                r = c.getresponse()
                b = r.read()
                h = dict((k.lower(), v) for k, v in r.getheaders())
                if h.get('connection', '').lower() == 'close':
                    c.close()
                    self.local.c = None
                return r.status, h, b
            except (http.client.HTTPException, OSError) as e:
                c.close()
                self.local.c = None
                # never retry a write: it may have been applied
                if attempt == 2 or method in ('POST', 'PUT'):
                    return -1, {}, ('%s: %s' % (type(e).__name__, e)).encode()


# --------------------------------------------------------------------------- model with writes

def ms_of_iso(s):
    d = dt.datetime.strptime(s, '%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=dt.timezone.utc)
    return int(round(d.timestamp() * 1000))


class WModel(cm.Model):
    def __init__(self, d):
        super().__init__(d)
        self.tainted = set()
        self.ops = []            # journal of applied writes (this run only)
        self.new_ids = {'review': set(), 'question': set(), 'answer': set()}

    def max_ids(self):
        return dict(review=max(self.review_by_id), question=max(self.question_by_id),
                    answer=max(self.answer_by_id),
                    review_photo=max(i for v in self.review_photos.values() for i, _ in v),
                    answer_photo=max(i for v in self.answer_photos.values() for i, _ in v))

    def apply(self, op, journal=True):
        kind = op[0]
        if kind == 'review':
            r = op[1]
            rv = dict(id=r['id'], pid=r['pid'], rating=r['rating'], date=r['date'], summary=r['summary'],
                      body=r['body'], recommend=r['recommend'], reported=False, name=r['name'],
                      email=r['email'], response=None, helpfulness=0)
            self.review_by_id[rv['id']] = rv
            self.reviews[rv['pid']].append(rv)
            self.review_photos[rv['id']] = sorted((int(i), u) for i, u in r['photos'])
            for cid, v in r['chars'].items():
                self.char_reviews[int(cid)].append((rv['id'], v))
            self.new_ids['review'].add(rv['id'])
        elif kind == 'question':
            q = dict(op[1])
            q.update(reported=False, helpful=0)
            self.question_by_id[q['id']] = q
            self.questions[q['pid']].append(q)
            self.new_ids['question'].add(q['id'])
        elif kind == 'answer':
            a = dict(op[1])
            photos = a.pop('photos')
            a.update(reported=False, helpful=0)
            self.answer_by_id[a['id']] = a
            self.answers[a['qid']].append(a)
            self.answer_photos[a['id']] = sorted((int(i), u) for i, u in photos)
            self.new_ids['answer'].add(a['id'])
        elif kind.endswith(('_helpful', '_report')):
            table, mark = kind.rsplit('_', 1)
            rows, votes = {'review': (self.review_by_id, 'helpfulness'),
                           'question': (self.question_by_id, 'helpful'),
                           'answer': (self.answer_by_id, 'helpful')}[table]
            row = rows.get(op[1])
            if row is not None:
                if mark == 'helpful':
                    row[votes] += 1
                else:
                    row['reported'] = True
        elif kind == 'taint':
            self.tainted.add(op[1])
        else:
            raise ValueError(kind)
        if journal:
            self.ops.append(op)


# --------------------------------------------------------------------------- reporting

class Rep:
    def __init__(self, show):
        self.show = show
        self.classes = collections.OrderedDict()
        self.infos = []
        self.lock = threading.Lock()

    def bad(self, key, ex):
        with self.lock:
            c = self.classes.setdefault(key, [0, []])
            c[0] += 1
            if len(c[1]) < self.show:
                c[1].append(ex)

    def info(self, *x):
        with self.lock:
            self.infos.append(x)


def short(v, n=160):
    if isinstance(v, bytes):
        v = v.decode('utf-8', 'replace')
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[:n] + '...'


# --------------------------------------------------------------------------- GET checks

def eval_get(path, est, ebody, s, h, b):
    """-> list of (generic, kind, concrete, exp, got)"""
    if s != est:
        return [('$', 'status %s vs %s' % (est, s), path, est, short(b, 120))]
    out = []
    ct = h.get('content-type', '')
    if s == 200:
        if not ct.startswith('application/json'):
            out.append(('$', 'content-type', path, 'application/json', ct))
        if ebody is None:
            return out
        try:
            got = json.loads(b, object_pairs_hook=collections.OrderedDict)
        except Exception:
            return out + [('$', 'bad json', path, '', short(b))]
        exp = json.loads(json.dumps(ebody), object_pairs_hook=collections.OrderedDict)
        cm.compare(exp, got, ('$', '$'), out)
    elif s == 404:
        if b != b'Not Found':
            out.append(('$', 'error body', path, 'Not Found', short(b)))
    return out


class Checker:
    def __init__(self, cl, m, rep, threads, poll):
        self.cl, self.m, self.rep, self.threads, self.poll = cl, m, rep, threads, poll
        self.lag = collections.OrderedDict()
        self.seen = {}   # phase -> {path: (etag, expected json text)}

    def one(self, spec, phase=None):
        label, path, fn = spec
        t0 = time.time()
        tries = 0
        while True:
            tries += 1
            est, ebody = fn()
            s, h, b = self.cl.req('GET', path)
            diffs = eval_get(path, est, ebody, s, h, b)
            if phase is not None:
                self.seen.setdefault(phase, {})[path] = (h.get('etag'), json.dumps(ebody, sort_keys=False))
            el = time.time() - t0
            if not diffs or el >= self.poll:
                return spec, diffs, el, tries
            time.sleep(0.05)

    def run(self, phase, specs):
        st = self.lag.setdefault(phase, dict(n=0, first=0, delayed=[], failed=0))
        with cf.ThreadPoolExecutor(self.threads) as ex:
            res = list(ex.map(lambda sp: self.one(sp, phase), specs))
        for (label, path, _), diffs, el, tries in res:
            st['n'] += 1
            if diffs:
                st['failed'] += 1
                seen = set()
                lab = ('baseline: ' + label) if phase == 'A baseline' else label
                for g, kind, cp, e, gv in diffs:
                    k = (lab, g, kind)
                    if k in seen:
                        continue
                    seen.add(k)
                    self.rep.bad(k, ('phase ' + phase, 'GET ' + path, cp, 'expected ' + short(e),
                                     'got ' + short(gv)))
            elif tries == 1:
                st['first'] += 1
            else:
                st['delayed'].append(el)
        return res


def product_specs(m, pid, heavy=False, questions=()):
    """GET checks for one product (+ the answers pages of the given question ids)."""
    if pid in m.tainted:
        return []
    S = []
    S.append(('GET /products/:id (unaffected)', '/products/%d' % pid, lambda: m.get_product(pid)))
    S.append(('GET /products/:id/styles (unaffected)', '/products/%d/styles' % pid, lambda: m.get_styles(pid)))
    S.append(('GET /products/:id/related (unaffected)', '/products/%d/related' % pid, lambda: m.get_related(pid)))
    for sort in ('newest', 'helpful', 'relevant'):
        S.append(('GET /reviews sort=%s all' % sort, '/reviews?product_id=%d&sort=%s&count=10000' % (pid, sort),
                  lambda sort=sort: m.get_reviews(pid, sort, 1, 10000)))
    S.append(('GET /reviews default', '/reviews?product_id=%d' % pid, lambda: m.get_reviews(pid)))
    S.append(('GET /reviews newest paged', '/reviews?product_id=%d&sort=newest&page=2&count=3' % pid,
              lambda: m.get_reviews(pid, 'newest', 2, 3)))
    S.append(('GET /reviews helpful paged', '/reviews?product_id=%d&sort=helpful&page=1&count=2' % pid,
              lambda: m.get_reviews(pid, 'helpful', 1, 2)))
    if heavy:
        for pg in (2, 3):
            S.append(('GET /reviews relevant paged', '/reviews?product_id=%d&sort=relevant&page=%d&count=5' % (pid, pg),
                      lambda pg=pg: m.get_reviews(pid, 'relevant', pg, 5)))
    S.append(('GET /reviews/meta', '/reviews/meta?product_id=%d' % pid, lambda: m.get_meta(pid)))
    # the same resources through other spellings (prefix, trailing slash, parameter order, sort case):
    # a response cache keyed on the raw URL must not serve them stale after a write
    S.append(('GET prefix /reviews', '/api/fec2/hr-rfp/reviews?product_id=%d' % pid, lambda: m.get_reviews(pid)))
    S.append(('GET /reviews/ NEWEST', '/reviews/?product_id=%d&sort=NEWEST&count=10000' % pid,
              lambda: m.get_reviews(pid, 'newest', 1, 10000)))
    S.append(('GET /reviews param order', '/reviews?count=5&sort=helpful&product_id=%d&page=1' % pid,
              lambda: m.get_reviews(pid, 'helpful', 1, 5)))
    S.append(('GET prefix /reviews/meta', '/api/fec2/hr-rfp/reviews/meta?product_id=%d' % pid, lambda: m.get_meta(pid)))
    S.append(('GET /reviews/meta/', '/reviews/meta/?product_id=%d' % pid, lambda: m.get_meta(pid)))
    S.append(('GET prefix /qa/questions', '/api/fec2/hr-rfp/qa/questions?product_id=%d&count=10000' % pid,
              lambda: m.get_questions(pid, 1, 10000)))
    S.append(('GET /qa/questions/ param order', '/qa/questions/?count=10000&product_id=%d' % pid,
              lambda: m.get_questions(pid, 1, 10000)))
    S.append(('GET /qa/questions default', '/qa/questions?product_id=%d' % pid, lambda: m.get_questions(pid)))
    S.append(('GET /qa/questions all', '/qa/questions?product_id=%d&count=10000' % pid,
              lambda: m.get_questions(pid, 1, 10000)))
    S.append(('GET /qa/questions paged', '/qa/questions?product_id=%d&page=2&count=2' % pid,
              lambda: m.get_questions(pid, 2, 2)))
    qids = [q['id'] for q in sorted(m.questions.get(pid, []), key=lambda q: q['id']) if not q['reported']][:2]
    for qid in list(dict.fromkeys(qids + [q for q in questions if m.question_by_id[q]['pid'] == pid])):
        S += answer_specs(m, qid)
    return S


def answer_specs(m, qid):
    if m.question_by_id[qid]['reported']:
        return []  # answers of a reported question: the contract leaves it open (informational)
    return [('GET /qa/questions/:id/answers default', '/qa/questions/%d/answers' % qid, lambda: m.get_answers(qid)),
            ('GET /qa/questions/:id/answers all', '/qa/questions/%d/answers?count=10000' % qid,
             lambda: m.get_answers(qid, 1, 10000)),
            ('GET /qa/questions/:id/answers paged', '/qa/questions/%d/answers?page=2&count=1' % qid,
             lambda: m.get_answers(qid, 2, 1)),
            ('GET prefix /qa/questions/:id/answers/', '/api/fec2/hr-rfp/qa/questions/%d/answers/?count=10000' % qid,
             lambda: m.get_answers(qid, 1, 10000))]


def scan(m, cl, threads, skip):
    """Loose (key order ignored) comparison of every product's reviews, meta and questions with the
    model. -> {pid: [paths that differ]}"""
    def one(p):
        bad = []
        for path, fn in (('/reviews?product_id=%d&sort=newest&count=10000' % p, lambda: m.get_reviews(p, 'newest', 1, 10000)),
                         ('/reviews/meta?product_id=%d' % p, lambda: m.get_meta(p)),
                         ('/qa/questions?product_id=%d&count=10000' % p, lambda: m.get_questions(p, 1, 10000))):
            s, h, b = cl.req('GET', path)
            try:
                ok = s == 200 and json.loads(b) == fn()[1]
            except ValueError:
                ok = False
            if not ok:
                bad.append(path.split('?')[0])
        return p, bad
    with cf.ThreadPoolExecutor(max(threads, 16)) as ex:
        res = list(ex.map(one, [p for p in m.pids if p not in skip]))
    return collections.OrderedDict((p, b) for p, b in res if b)


# --------------------------------------------------------------------------- the write burst

class Burst:
    def __init__(self, a, m, cl, rep, run):
        self.a, self.m, self.cl, self.rep, self.run = a, m, cl, rep, run
        self.rnd = random.Random(a.seed)
        self.k = 0
        # a run tag keeps the tokens of different runs apart even if a journal is lost
        self.tag = '%03d%s' % (run, base36(int(time.time()))[-5:])
        self.maxid = m.max_ids()
        self.cases = []
        self.touched_q = set()

    def tok(self):
        self.k += 1
        return 'MW%sT%04dZ' % (self.tag, self.k)

    def peek(self):
        return 'MW%sT%04dZ' % (self.tag, self.k + 1)

    # ---- sending
    def send(self, kind, case, method, path, body=None, expect=(201,), msg=None, clear=True, auth=TOKEN,
             ctype='application/json', extra=None):
        """Send one write; check status and body text; returns the case dict."""
        t0 = time.time()
        if isinstance(body, bytes) and len(body) > 1 << 20:
            s, h, b = self.cl.raw(method, path, body)
        else:
            s, h, b = self.cl.req(method, path, body, auth=auth, ctype=ctype)
        t1 = time.time()
        c = dict(kind=kind, case=case, method=method, path=path, body=body, expect=expect, status=s,
                 resp=b, t0=t0, t1=t1, clear=clear)
        if extra:
            c.update(extra)
        self.cases.append(c)
        self.check_status(c, h)
        return c

    def check_status(self, c, h):
        s, b = c['status'], c['resp']
        req = '%s %s %s' % (c['method'], c['path'], short(c['body'], 100) if c['body'] is not None else '')
        label = '%s %s' % (c['method'], re.sub(r'/\d+', '/:id', c['path'].split('?')[0]))
        if s not in c['expect']:
            if c['clear']:
                self.rep.bad((label, c['case'], 'status %s vs %s' % ('/'.join(map(str, c['expect'])), s)),
                             (req, 'got ' + short(b, 100)))
            else:
                self.rep.info('%s [%s]: status %s (model guessed %s): %s' % (label, c['case'], s, c['expect'],
                                                                          short(b, 80)))
            return
        if not c['clear']:
            self.rep.info('%s [%s]: status %s, as the model guessed' % (label, c['case'], s))
        want = {201: b'Created', 204: b''}.get(s)
        if s in (404, 405):
            want = b'Not Found' if s == 404 else None
        if s == 422:
            want = MSG.get(c['kind'])
        if want is not None and b != want:
            self.rep.bad((label, c['case'] if s >= 400 else 'success', 'response body'),
                         (req, 'expected %r' % want, 'got %r' % short(b, 100)))
        if s >= 400 and s != 405 and not h.get('content-type', '').startswith('text/plain'):
            self.rep.bad((label, 'error', 'content-type'), (req, h.get('content-type')))

    # ---- payloads
    def name_for(self, t, n=None):
        s = 'mw_' + t
        return s if n is None else (s + 'x' * n)[:n]

    def review(self, pid, t, **over):
        m, rnd = self.m, self.rnd
        p = collections.OrderedDict()
        p['product_id'] = pid
        p['rating'] = rnd.randint(1, 5)
        p['summary'] = 'Model summary %s' % t
        p['body'] = 'Model review body %s: fits, wears and washes as described.' % t
        p['recommend'] = rnd.random() < 0.6
        p['name'] = self.name_for(t)
        p['email'] = 'mw.%s@example.com' % t.lower()
        p['photos'] = ['https://img.example.com/mw/%s/%d.jpg' % (t, i) for i in range(rnd.randint(1, 3))]
        p['characteristics'] = collections.OrderedDict(
            (str(c['id']), rnd.randint(1, 5)) for c in m.chars.get(pid, []))
        return overridden(p, over)

    def question(self, pid, t, **over):
        p = collections.OrderedDict(body='Model question %s: does it run small?' % t, name=self.name_for(t),
                                    email='mw.%s@example.com' % t.lower(), product_id=pid)
        return overridden(p, over)

    def answer(self, t, nphotos=0, **over):
        p = collections.OrderedDict(body='Model answer %s: true to size.' % t, name=self.name_for(t),
                                    email='mw.%s@example.com' % t.lower(),
                                    photos=['https://img.example.com/mwa/%s/%d.jpg' % (t, i) for i in range(nphotos)])
        return overridden(p, over)


DEL = object()


def overridden(body, over):
    """`body` with the fields of `over` set, or removed where their value is DEL."""
    for k, v in over.items():
        if v is DEL:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def nid(rows):
    """id of the first row (a learned write case or a model row), None when there is none"""
    return rows[0]['id'] if rows else None


def base36(n):
    d = '0123456789abcdefghijklmnopqrstuvwxyz'
    out = ''
    while True:
        n, r = divmod(n, 36)
        out = d[r] + out
        if not n:
            return out.upper()


def find_tok(items, t, fields):
    return [x for x in items if any(isinstance(x.get(f), str) and t in x.get(f) for f in fields)]


def check_date(rep, label, s, c):
    if not isinstance(s, str) or not ISO_RE.match(s):
        rep.bad((label, 'server-assigned date', 'format'), (c['case'], 'got %r' % (s,)))
        return None
    ms = ms_of_iso(s)
    if not (c['t0'] - DATE_TOL) * 1000 <= ms <= (c['t1'] + DATE_TOL) * 1000:
        rep.bad((label, 'server-assigned date', 'not now'),
                (c['case'], 'sent at %s' % cm.iso(int(c['t0'] * 1000)), 'got %s' % s))
    return ms


def learn(B, cl, m, rep, cases, poll):
    """For each accepted (201) POST among `cases`, find the created row in the server's GETs by its
    token, check the server-assigned fields, and apply it to the model."""
    acc = [c for c in cases if c['status'] == 201 and c['kind'] in ('review', 'question', 'answer')
           and not c.get('learned')]
    for c in acc:
        c['learned'] = True
    groups = collections.OrderedDict()
    def flag(c, key, ex):
        if c['clear']:
            rep.bad(key, ex)
        else:
            rep.info('%s / %s / %s:' % key, *ex)
    for c in acc:
        if c.get('where') is None:
            flag(c, ('POST %s' % c['kind'], c['case'], 'accepted, not modelable'), (short(c['body']),))
            continue
        groups.setdefault(c['where'], []).append(c)

    def fetch(where):
        kind, key = where
        path = {'review': '/reviews?product_id=%d&sort=newest&count=10000',
                'question': '/qa/questions?product_id=%d&count=10000',
                'answer': '/qa/questions/%d/answers?count=10000'}[kind] % key
        fields = {'review': ('body', 'reviewer_name'), 'question': ('question_body', 'asker_name'),
                  'answer': ('body', 'answerer_name')}[kind]
        t0 = time.time()
        found = {}
        while True:
            s, h, b = cl.req('GET', path)
            try:
                res = json.loads(b)['results'] if s == 200 else []
            except Exception:
                res = []
            for c in groups[where]:
                found[c['tok']] = find_tok(res, c['tok'], fields)
            if all(found.values()) or time.time() - t0 > poll + 3:
                return where, found, time.time() - t0
            time.sleep(0.05)

    with cf.ThreadPoolExecutor(8) as ex:
        got = list(ex.map(fetch, list(groups)))
    lags = []
    for where, found, lag in got:
        lags.append(lag)
        for c in groups[where]:
            rows = found[c['tok']]
            label = 'POST %s learned' % c['kind']
            if len(rows) != 1:
                flag(c, (label, 'created row visible exactly once', '%d found' % len(rows)),
                     (c['case'], c['path'], short(c['body'])))
                if rows:
                    m.apply(('taint', c['pid']))
                continue
            c['row'] = rows[0]
    # check + apply in send order
    mx = dict(B.maxid)
    last = {'review': 0, 'question': 0, 'answer': 0}
    last_photo = {'review': 0, 'answer': 0}
    for c in acc:
        row = c.get('row')
        if row is None:
            continue
        kind, p = c['kind'], c['body']
        label = 'POST %s learned' % kind
        idk = {'review': 'review_id', 'question': 'question_id', 'answer': 'answer_id'}[kind]
        rid = row.get(idk)
        known = {'review': m.review_by_id, 'question': m.question_by_id, 'answer': m.answer_by_id}[kind]
        if not isinstance(rid, int) or isinstance(rid, bool) or rid in known or rid <= mx[kind]:
            rep.bad((label, 'new id', 'not new'), (c['case'], 'id %r, max before %d' % (rid, mx[kind])))
            m.apply(('taint', c['pid']))
            continue
        if not c.get('concurrent'):
            if rid <= last[kind]:
                rep.bad((label, 'new id', 'not increasing'), (c['case'], '%d after %d' % (rid, last[kind])))
            last[kind] = rid
        datek = {'review': 'date', 'question': 'question_date', 'answer': 'date'}[kind]
        ms = check_date(rep, label, row.get(datek), c)
        if ms is None:
            m.apply(('taint', c['pid']))
            continue

        def expect(field, e, g):
            if e != g or type(e) != type(g):
                rep.bad((label, field, 'value'), (c['case'], 'expected %s' % short(e), 'got %s' % short(g)))
        photos = []
        if kind in ('review', 'answer'):
            urls = list(p.get('photos') or [])
            gp = row.get('photos')
            if not isinstance(gp, list) or [x.get('url') for x in gp] != urls:
                rep.bad((label, 'photos', 'urls'), (c['case'], 'expected %s' % short(urls), 'got %s' % short(gp)))
            else:
                pk = kind + '_photo'
                for x in gp:
                    if not isinstance(x.get('id'), int) or x['id'] <= mx[pk]:
                        rep.bad((label, 'photo id', 'not new'), (c['case'], 'got %r, max before %d' % (x.get('id'), mx[pk])))
                    elif not c.get('concurrent'):
                        if x['id'] <= last_photo[kind]:
                            rep.bad((label, 'photo id', 'not increasing'), (c['case'], '%d after %d' % (x['id'], last_photo[kind])))
                        last_photo[kind] = x['id']
                photos = [(x['id'], x['url']) for x in gp if isinstance(x.get('id'), int)]
        try:
            if kind == 'review':
                expect('rating', int(p['rating']), row.get('rating'))
                if 'summary' not in p:  # left open by the contract: take the server's
                    p = dict(p, summary=row.get('summary'))
                    rep.info('POST /reviews without summary: GET shows summary %r' % (row.get('summary'),))
                expect('summary', p.get('summary'), row.get('summary'))
                expect('body', p['body'], row.get('body'))
                expect('recommend', p['recommend'], row.get('recommend'))
                expect('reviewer_name', p['name'], row.get('reviewer_name'))
                expect('helpfulness', 0, row.get('helpfulness'))
                expect('response', None, row.get('response'))
                m.apply(('review', dict(id=rid, pid=c['pid'], rating=int(p['rating']), date=ms, summary=p.get('summary'),
                                        body=p['body'], recommend=p['recommend'], name=p['name'], email=p['email'],
                                        photos=photos,
                                        chars={int(k): int(v) for k, v in (p.get('characteristics') or {}).items()})))
            elif kind == 'question':
                expect('question_body', p['body'], row.get('question_body'))
                expect('asker_name', p['name'], row.get('asker_name'))
                expect('question_helpfulness', 0, row.get('question_helpfulness'))
                expect('reported', False, row.get('reported'))
                expect('answers', {}, row.get('answers'))
                m.apply(('question', dict(id=rid, pid=c['pid'], body=p['body'], date=ms, name=p['name'],
                                          email=p['email'])))
            else:
                expect('body', p['body'], row.get('body'))
                expect('answerer_name', p['name'], row.get('answerer_name'))
                expect('helpfulness', 0, row.get('helpfulness'))
                m.apply(('answer', dict(id=rid, qid=c['qid'], body=p['body'], date=ms, name=p['name'],
                                        email=p['email'], photos=photos)))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            flag(c, (label, c['case'], 'accepted, not modelable'), (short(p), repr(e)))
            m.apply(('taint', c['pid']))
            continue
        c['id'] = rid
    return max(lags) if lags else 0.0


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('csv_dir')
    ap.add_argument('--base', default='http://127.0.0.1:3101')
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--products', type=int, default=24, help='random products touched (plus edge products)')
    ap.add_argument('--threads', type=int, default=8)
    ap.add_argument('--poll', type=float, default=2.0, help='seconds to wait for a GET to reflect a write')
    ap.add_argument('--show', type=int, default=2)
    ap.add_argument('--journal')
    ap.add_argument('--json-out')
    ap.add_argument('--quarantine-dirty', action='store_true',
                    help='products found to differ from CSV + journal before writing (e.g. after a lost '
                         'journal) are recorded in the journal and left out from then on, instead of failing')
    ap.add_argument('--no-final-scan', action='store_true')
    ap.add_argument('--check-only', action='store_true',
                    help='send no writes: check the touched products against CSV + journal, then exit')
    a = ap.parse_args()
    a.products = max(a.products, 24)
    u = urllib.parse.urlparse(a.base)
    jpath = a.journal or os.path.join(tempfile.gettempdir(),
                                      'contract_writes_journal_%s_%s.json' % (u.hostname, u.port or 80))
    T0 = a.T0 = time.time()
    m = WModel(a.csv_dir)
    cl = HC(a.base)
    rep = Rep(a.show)
    print('loaded %s in %.1fs' % (a.csv_dir, time.time() - T0))

    # ---- journal of earlier runs against this server
    journal = dict(runs=0, ops=[], probes=[], quarantine=[])
    if os.path.exists(jpath):
        with open(jpath) as fh:
            j = json.load(fh)
        found = 0
        for pid, rid in j.get('probes') or []:
            s, h, b = cl.req('GET', '/reviews?product_id=%d&sort=newest&count=10000' % pid)
            found += s == 200 and any(r.get('review_id') == rid for r in json.loads(b).get('results', []))
        if j.get('csv_dir') != os.path.abspath(a.csv_dir) or not j.get('probes') or found == 0:
            print('journal %s: not for this data set, or none of its writes is on the server (reset?): ignored'
                  % jpath)
        elif found < len(j['probes']):
            print('journal %s: only %d of %d probe reviews are on the server: its state is not one this model '
                  'can follow; ask the server owner for a reset (then the journal is dropped by itself)'
                  % (jpath, found, len(j['probes'])))
            sys.exit(2)
        else:
            journal = j
            for op in j['ops']:
                m.apply(tuple(op), journal=False)
            print('journal %s: replayed %d writes of %d earlier run(s); %d products quarantined' % (
                jpath, len(j['ops']), j['runs'], len(j.get('quarantine', []))))
    run = journal['runs'] + 1
    m.ops = []
    quarantine = set(journal.get('quarantine', []))

    # ---- every product's reviews/meta/questions vs CSV + journal (finds state the model cannot follow)
    t = time.time()
    dirty = scan(m, cl, a.threads, quarantine)
    print('scan before writes: %d products compared in %.1fs, %d differ from CSV + journal' % (
        len(m.pids) - len(quarantine), time.time() - t, len(dirty)))
    if dirty:
        if a.quarantine_dirty:
            quarantine |= set(dirty)
            print('  quarantined (--quarantine-dirty): %s' % sorted(dirty))
        else:
            for p, paths in sorted(dirty.items()):
                rep.bad(('scan before writes', 'product differs from CSV + journal', 'state not modelable'),
                        ('product %d' % p, ', '.join(paths)))
    exclude = quarantine | set(dirty) | m.tainted

    def save_journal():
        # probes: up to 3 visible reviews this script created, on different products; a later run
        # replays the journal only when all are on the server
        probes, seen = [], set()
        for rid in sorted(m.new_ids['review'], reverse=True):
            r = m.review_by_id[rid]
            if not r['reported'] and r['pid'] not in seen and r['pid'] not in m.tainted:
                probes.append([r['pid'], rid])
                seen.add(r['pid'])
            if len(probes) == 3:
                break
        with open(jpath, 'w') as fh:
            json.dump(dict(runs=run, csv_dir=os.path.abspath(a.csv_dir), base=a.base, probes=probes,
                           quarantine=sorted(quarantine | m.tainted),
                           ops=journal['ops'] + [list(o) for o in m.ops]), fh)

    B = Burst(a, m, cl, rep, run)
    rnd = B.rnd
    chk = Checker(cl, m, rep, a.threads, a.poll)

    # ---- products to touch
    P = collections.OrderedDict()

    def pick(tag, cands):
        for p in cands:
            if p not in P and p not in exclude:
                P[p] = tag
                return p
    shuffled = m.pids[:]
    rnd.shuffle(shuffled)
    p_many = pick('many reviews', sorted(m.pids, key=lambda p: -len(m.visible_reviews(p))))
    p_none = pick('no reviews', [p for p in shuffled if not m.visible_reviews(p)])
    p_one = pick('one characteristic', [p for p in shuffled if len(m.chars.get(p, [])) == 1])
    p_allrep = pick('all reviews reported', [p for p in shuffled if m.reviews.get(p) and not m.visible_reviews(p)])
    p_small = pick('few reviews (to report all)', [p for p in shuffled if 2 <= len(m.visible_reviews(p)) <= 3])
    p_noq = pick('no questions', [p for p in shuffled if not [q for q in m.questions.get(p, []) if not q['reported']]])
    p_repq = pick('reported question', [p for p in shuffled if any(q['reported'] for q in m.questions.get(p, []))])
    p_manyq = pick('many questions', sorted(m.pids, key=lambda p: -len(m.questions.get(p, []))))
    p_repa = pick('reported answer', [p for p in shuffled if any(
        a_['reported'] for q in m.questions.get(p, []) if not q['reported'] for a_ in m.answers.get(q['id'], []))])
    for p in shuffled:
        if len([x for x in P.values() if x == 'random']) >= a.products:
            break
        if p not in P and p not in exclude:
            P[p] = 'random'
    rand = [p for p, t in P.items() if t == 'random']
    print('run %d, seed %d: %d products touched: %s' % (run, a.seed, len(P), dict(collections.Counter(P.values()))))

    unk = cm.unknown_id(m.pids)

    def all_specs(extra_q=()):
        S = [('GET /products (unaffected)', '/products?page=1&count=5', lambda: (200, m.get_products(1, 5))),
             ('GET /reviews unknown product', '/reviews?product_id=%d&count=10000' % unk, lambda: m.get_reviews(unk, 'relevant', 1, 10000)),
             ('GET /reviews/meta unknown product', '/reviews/meta?product_id=%d' % unk, lambda: m.get_meta(unk)),
             ('GET /qa/questions unknown product', '/qa/questions?product_id=%d&count=10000' % unk,
              lambda: m.get_questions(unk, 1, 10000))]
        for p in P:
            S += product_specs(m, p, heavy=(p == p_many), questions=extra_q)
        return S

    # ================================================================ A: baseline
    chk.run('A baseline', all_specs())
    if a.check_only:
        report(a, m, rep, B, chk, jpath, run - 1, journal)
    try:
        phases(a, m, cl, rep, B, chk, P, rand, all_specs, locals())
    except BaseException:
        # keep the model in step with what the server accepted before the failure
        try:
            learn(B, cl, m, rep, B.cases, a.poll)
        finally:
            save_journal()
        raise
    save_journal()
    if not a.no_final_scan:
        t = time.time()
        after = scan(m, cl, a.threads, exclude)
        print('scan after writes: %.1fs, %d products differ from the model' % (time.time() - t, len(after)))
        for p, paths in sorted(after.items()):
            rep.bad(('scan after writes', 'untouched product changed' if p not in P else 'touched product',
                     'differs from model'), ('product %d' % p, ', '.join(paths)))
    report(a, m, rep, B, chk, jpath, run, journal)


def phases(a, m, cl, rep, B, chk, P, rand, all_specs, L):
    rnd, run = B.rnd, B.run
    p_many, p_none, p_one, p_allrep, p_small, p_noq, p_repq, p_manyq, p_repa = (
        L[k] for k in ('p_many', 'p_none', 'p_one', 'p_allrep', 'p_small', 'p_noq', 'p_repq', 'p_manyq', 'p_repa'))

    # ================================================================ B: POST /reviews
    def post_review(case, pid, expect=(201,), clear=True, path='/reviews', raw=None, ctype='application/json', **over):
        t = B.tok()
        body = raw if raw is not None else B.review(pid, t, **over)
        try:
            where_pid = int(body['product_id']) if raw is None else None
            if where_pid not in m.products:
                where_pid = None
        except (KeyError, ValueError, TypeError):
            where_pid = None
        return B.send('review', case, 'POST', path, body, expect=expect, clear=clear, ctype=ctype,
                      extra=dict(tok=t, pid=where_pid, where=('review', where_pid) if where_pid else None))

    V = (201,)
    I = (422,)
    # valid
    for p in rand[:8]:
        post_review('valid', p)
    post_review('valid, no photos key, recommend false', rand[8], photos=DEL, recommend=False)
    post_review('valid, photos []', rand[9], photos=[])
    post_review('valid, 5 photos', rand[10], photos=['https://img.example.com/mw/five/%d.jpg' % i for i in range(5)])
    post_review('valid, rating 1', rand[11], rating=1, recommend=False)
    post_review('valid, rating 5', rand[11], rating=5, recommend=True)
    post_review('valid, product_id numeric string', rand[12], product_id=str(rand[12]))
    c0 = m.chars[rand[13]]
    post_review('valid, subset of characteristics', rand[13],
                characteristics={str(c0[0]['id']): 4})
    t = B.peek()
    post_review('valid, body 1000 / summary 1000 / name 60 / email 60', rand[14],
                body=(t + ' ' + 'b' * 1000)[:1000], summary=('s ' + t + 's' * 1000)[:1000],
                name=B.name_for(t, 60), email=('e' * 60)[:60 - len('@example.com')] + '@example.com')
    t = B.peek()
    post_review('valid, tricky text', rand[15],
                body='%s "quoted", back\\slash, comma,  double  space\nnewline\ttab <b>html</b> é ü 中文 😀 \'sq\'' % t,
                summary='Sum "q" , é 😀 %s' % t)
    t = B.peek()
    post_review('valid, body of 1000 non-ASCII chars', rand[16], name=B.name_for(t),
                body=(t + 'é' * 1000)[:1000])
    if p_none:
        post_review('valid, product with no reviews', p_none)
    if p_one:
        post_review('valid, one characteristic', p_one)
    if p_allrep:
        post_review('valid, product whose reviews are all reported', p_allrep)
    for i in range(4):
        post_review('valid, many-reviews product', p_many, photos=[] if i % 2 else ['https://img.example.com/mw/m%d.jpg' % i])
    post_review('valid, prefix route', rand[17], path='/api/fec2/hr-rfp/reviews')
    post_review('valid, trailing slash', rand[17], path='/reviews/')
    if p_small:
        post_review('valid, small product', p_small)
    # choices the contract leaves open
    post_review('characteristics {}', rand[18], expect=V, clear=False, characteristics={})
    post_review('characteristics missing', rand[18], expect=V, clear=False, characteristics=DEL)
    post_review('summary missing', rand[18], expect=V, clear=False, summary=DEL)
    post_review('rating as string "4"', rand[19], expect=V, clear=False, rating='4')
    post_review('photos null', rand[19], expect=V, clear=False, photos=None)
    post_review('recommend 1', rand[19], expect=I, clear=False, recommend=1)
    post_review('photo not a URL', rand[19], expect=I, clear=False, photos=['not a url'])
    post_review('unknown extra field', rand[19], expect=V, clear=False, foo=1)
    post_review('unknown product, characteristics {}', None, expect=I, clear=False,
                product_id=max(m.pids) + 1000, characteristics={})
    post_review('8 MB body', rand[19], expect=(413,), clear=False, raw=b'{"body":"' + b'x' * (8 << 20) + b'"}')
    # invalid (the contract's list: wrong types, missing fields, rating outside 1-5, unknown
    # characteristic id, over-long text, malformed JSON)
    tp = rand[20]
    other = m.chars[rand[21]][0]['id']
    cids = [str(c['id']) for c in m.chars[tp]]
    for case, over in [
            ('rating 0', dict(rating=0)), ('rating 6', dict(rating=6)), ('rating 3.5', dict(rating=3.5)),
            ('rating missing', dict(rating=DEL)), ('rating null', dict(rating=None)),
            ('body missing', dict(body=DEL)), ('body empty', dict(body='')),
            ('body 1001 chars', dict(body='MWB' + 'b' * 998)), ('body not a string', dict(body=12345)),
            ('summary 1001 chars', dict(summary='s' * 1001)),
            ('name missing', dict(name=DEL)), ('name empty', dict(name='')), ('name 61 chars', dict(name='n' * 61)),
            ('email missing', dict(email=DEL)), ('email empty', dict(email='')),
            ('email not an email', dict(email='not-an-email')),
            ('email 61 chars', dict(email='e' * 49 + '@example.com')),
            ('recommend missing', dict(recommend=DEL)), ('recommend "yes"', dict(recommend='yes')),
            ('product_id missing', dict(product_id=DEL)), ('product_id 0', dict(product_id=0)),
            ('product_id -1', dict(product_id=-1)), ('product_id "abc"', dict(product_id='abc')),
            ('product_id 5.5', dict(product_id=5.5)), ('product_id true', dict(product_id=True)),
            ('product_id 2^63', dict(product_id=2 ** 63)), ('product_id 2^64+1', dict(product_id=2 ** 64 + 1)),
            ('rating true', dict(rating=True)), ('recommend null', dict(recommend=None)),
            ('characteristic of another product', dict(characteristics={cids[0]: 3, str(other): 3})),
            ('characteristic id unknown', dict(characteristics={'999999999': 3})),
            ('characteristic id not numeric', dict(characteristics={'abc': 3})),
            ('characteristic value 0', dict(characteristics={cids[0]: 0})),
            ('characteristic value 6', dict(characteristics={cids[0]: 6})),
            ('characteristics not an object', dict(characteristics=[3, 4])),
            ('6 photos', dict(photos=['https://img.example.com/x/%d.jpg' % i for i in range(6)])),
            ('photos not an array', dict(photos='https://img.example.com/x.jpg')),
            ('photo not a string', dict(photos=[123])),
            ('unknown product (with a real characteristic)', dict(product_id=max(m.pids) + 1000,
                                                                   characteristics={str(other): 3})),
    ]:
        post_review(case, tp, expect=I, **over)
    post_review('body is a JSON array', tp, expect=I, raw=b'[1,2,3]')
    post_review('malformed JSON', tp, expect=(422, 400), raw=b'{"product_id": %d, "rating": ' % tp)
    post_review('empty body', tp, expect=(422, 400), raw=b'')
    # concurrent POSTs to one product: all land, ids unique
    p_conc = rand[22]
    conc = []
    with cf.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(post_review, 'valid, concurrent', p_conc) for _ in range(8)]
        for f in futs:
            c = f.result()
            c['concurrent'] = True
            conc.append(c)
    lag = learn(B, cl, m, rep, [c for c in B.cases if c['kind'] == 'review'], a.poll)
    print('B: %d review POSTs sent; created rows learned within %.2fs' % (
        len([c for c in B.cases if c['kind'] == 'review']), lag))
    chk.run('B reviews posted', all_specs())

    # ================================================================ C: review helpful/report
    def put(kind, case, path, tid=(), expect=(204,), clear=True):
        """PUT path % tid; on 204 apply `<kind>_<helpful|report>` to id tid. tid None: no target, skipped."""
        if tid is None:
            rep.info('%s [%s]: skipped, no target (an earlier write was not learned)' % (path, case))
            return None
        c = B.send(kind, case, 'PUT', path % tid if tid != () else path, None, expect=expect, clear=clear)
        if c['status'] == 204 and tid != ():
            m.apply(('%s_%s' % (kind, 'report' if '/report' in path else 'helpful'), tid))
        return c

    newrev = [c for c in B.cases if c['kind'] == 'review' and c.get('id')]
    vis_many = sorted(m.visible_reviews(p_many), key=lambda r: (-r['helpfulness'], -r['date'], -r['id']))
    r_mid = vis_many[len(vis_many) // 2]['id']
    for i in range(3):
        put('review', 'helpful, existing review', '/reviews/%s/helpful', r_mid)
    r_new = nid(newrev)
    put('review', 'helpful, new review', '/reviews/%s/helpful', r_new)
    r_new2 = nid([c for c in newrev if c['pid'] == p_many])
    put('review', 'helpful, prefix route', '/api/fec2/hr-rfp/reviews/%s/helpful', r_new2)
    put('review', 'helpful, trailing slash', '/reviews/%s/helpful/', r_new2)
    r_conc = nid([c for c in newrev if c['pid'] == p_conc])
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda _: put('review', 'helpful, 16 concurrent', '/reviews/%s/helpful', r_conc), range(16)))
    # reports
    r_rep_old = nid([r for r in vis_many if m.review_photos.get(r['id']) and r['id'] not in m.new_ids['review']])
    put('review', 'report, existing review with photos', '/reviews/%s/report', r_rep_old)
    r_rep_new = nid([c for c in newrev if c['pid'] == rand[1]])
    put('review', 'report, new review', '/reviews/%s/report', r_rep_new)
    for r in list(m.visible_reviews(p_small) if p_small else []):
        put('review', 'report, every review of a product', '/reviews/%s/report', r['id'])
    put('review', 'report twice', '/reviews/%s/report', r_rep_new, clear=False)
    put('review', 'helpful on a reported review', '/reviews/%s/helpful', r_rep_new, clear=False)
    for case, path in [('unknown id', '/reviews/999999999/helpful'), ('unknown id', '/reviews/999999999/report'),
                       ('id 0', '/reviews/0/helpful'), ('id not numeric', '/reviews/abc/helpful'),
                       ('id > 2^64', '/reviews/99999999999999999999/report'),
                       ('id -1', '/reviews/-1/helpful'), ('id 2^63-1', '/reviews/9223372036854775807/helpful')]:
        put('review', case, path, expect=(404,))
    for meth, path in [('GET', '/reviews/%d/helpful' % r_mid), ('POST', '/reviews/%d/report' % r_mid),
                       ('PUT', '/reviews'), ('PUT', '/reviews/%d' % r_mid)]:
        B.send('review', 'wrong method', meth, path, None, expect=(405, 404) if path.count('/') == 2 else (405,))
    chk.run('C reviews helpful/report', all_specs())

    # ================================================================ D: POST /qa/questions
    def post_question(case, pid, expect=(201,), clear=True, path='/qa/questions', raw=None, **over):
        t = B.tok()
        body = raw if raw is not None else B.question(pid, t, **over)
        return B.send('question', case, 'POST', path, body, expect=expect, clear=clear,
                      extra=dict(tok=t, pid=pid, where=('question', pid) if pid in m.products else None))

    for p in rand[:6]:
        post_question('valid', p)
    if p_noq:
        post_question('valid, product with no questions', p_noq)
    if p_repq:
        post_question('valid, product with a reported question', p_repq)
    for i in range(3):
        post_question('valid, many-questions product', p_manyq)
    post_question('valid, product_id in the query string only', rand[6], path='/qa/questions?product_id=%d' % rand[6],
                  product_id=DEL)
    t = B.peek()
    post_question('valid, body 1000 / name 60 / email 60', rand[7], body=(t + ' ' + 'q' * 1000)[:1000],
                  name=B.name_for(t, 60), email=('e' * 60)[:60 - len('@example.com')] + '@example.com')
    t = B.peek()
    post_question('valid, tricky text', rand[8], body='%s "q", \\ é 中文 😀\nline' % t)
    post_question('valid, prefix route', rand[9], path='/api/fec2/hr-rfp/qa/questions')
    if p_repa:
        post_question('valid, product with reported answer', p_repa)
    post_question('product_id numeric string', rand[10], clear=False, product_id=str(rand[10]))
    tq = rand[11]
    for case, over in [('body missing', dict(body=DEL)), ('body empty', dict(body='')),
                       ('body 1001 chars', dict(body='q' * 1001)), ('name missing', dict(name=DEL)),
                       ('name empty', dict(name='')), ('name 61 chars', dict(name='n' * 61)),
                       ('email missing', dict(email=DEL)), ('email not an email', dict(email='nope')),
                       ('email 61 chars', dict(email='e' * 49 + '@example.com')),
                       ('body not a string', dict(body=5)),
                       ('product_id missing', dict(product_id=DEL)), ('product_id 0', dict(product_id=0)),
                       ('product_id 2^63', dict(product_id=2 ** 63)), ('product_id 5.5', dict(product_id=5.5)),
                       ('product_id "abc"', dict(product_id='abc')),
                       ('unknown product', dict(product_id=max(m.pids) + 1000))]:
        post_question(case, tq, expect=(422,), **over)
    post_question('malformed JSON', tq, expect=(422, 400), raw=b'{"body": "x", ')
    lag = learn(B, cl, m, rep, [c for c in B.cases if c['kind'] == 'question'], a.poll)
    newq = [c for c in B.cases if c['kind'] == 'question' and c.get('id')]
    print('D: %d question POSTs; created rows learned within %.2fs' % (
        len([c for c in B.cases if c['kind'] == 'question']), lag))
    chk.run('D questions posted', all_specs([c['id'] for c in newq]))

    # ================================================================ E: POST answers
    def post_answer(case, qid, expect=(201,), clear=True, nphotos=0, raw=None, path=None, **over):
        t = B.tok()
        body = raw if raw is not None else B.answer(t, nphotos, **over)
        q = m.question_by_id.get(qid)
        return B.send('answer', case, 'POST', path or '/qa/questions/%d/answers' % qid, body, expect=expect,
                      clear=clear, extra=dict(tok=t, qid=qid, pid=q['pid'] if q else None,
                                              where=('answer', qid) if q else None))

    def vis_q(p, with_answers=None):
        qs = [q for q in sorted(m.questions.get(p, []), key=lambda q: q['id']) if not q['reported']]
        if with_answers is True:
            qs = [q for q in qs if [x for x in m.answers.get(q['id'], []) if not x['reported']]]
        elif with_answers is False:
            qs = [q for q in qs if not m.answers.get(q['id'])]
        return qs
    aq = []
    for p in rand + list(P):
        qs = vis_q(p, True)
        if qs and len(aq) < 4 and p not in (p_manyq, p_repa) and qs[0]['id'] not in aq:
            aq.append(qs[0]['id'])
    for i, qid in enumerate(aq):
        post_answer('valid, no photos' if i % 2 else 'valid, 2 photos', qid, nphotos=0 if i % 2 else 2)
    q_noans = next((q['id'] for p in P for q in vis_q(p, False)), None)
    if q_noans:
        post_answer('valid, question without answers', q_noans, nphotos=1)
    q_new = nid(newq)
    if q_new:
        post_answer('valid, new question', q_new, nphotos=5)
        post_answer('valid, new question, photos key absent', q_new, photos=DEL)
    if len(newq) > 1:
        post_answer('valid, photos []', newq[1]['id'])
    q_many = sorted(vis_q(p_manyq, True), key=lambda q: -len(m.answers[q['id']]))[0]['id']
    post_answer('valid, busy question', q_many, nphotos=1)
    post_answer('valid, busy question', q_many)
    aq = aq + [q_many] * 3
    t = B.peek()
    post_answer('valid, body 1000 / name 60 / email 60', aq[0], body=(t + ' ' + 'a' * 1000)[:1000],
                name=B.name_for(t, 60), email=('e' * 60)[:60 - len('@example.com')] + '@example.com')
    t = B.peek()
    post_answer('valid, tricky text', aq[1], body='%s "a", \\ é 😀\n<i>x</i>' % t)
    post_answer('valid, prefix route', aq[2], path='/api/fec2/hr-rfp/qa/questions/%d/answers' % aq[2])
    if p_repa:
        q_repa = next(q['id'] for q in vis_q(p_repa) if any(x['reported'] for x in m.answers.get(q['id'], [])))
        post_answer('valid, question with a reported answer', q_repa)
    q_reported = next((q['id'] for p in P for q in m.questions.get(p, []) if q['reported']), None)
    if q_reported:
        post_answer('answer to a reported question', q_reported, expect=(201,), clear=False)
    ta = aq[3] if len(aq) > 3 else aq[0]
    for case, over in [('body missing', dict(body=DEL)), ('body empty', dict(body='')),
                       ('body 1001 chars', dict(body='a' * 1001)), ('name missing', dict(name=DEL)),
                       ('name 61 chars', dict(name='n' * 61)), ('email missing', dict(email=DEL)),
                       ('email not an email', dict(email='nope@')), ('email 61 chars', dict(email='e' * 49 + '@example.com')),
                       ('6 photos', dict(photos=['https://img.example.com/y/%d.jpg' % i for i in range(6)])),
                       ('photos not an array', dict(photos='https://img.example.com/y.jpg')),
                       ('photo not a string', dict(photos=[1]))]:
        post_answer(case, ta, expect=(422,), **over)
    post_answer('malformed JSON', ta, expect=(422, 400), raw=b'{"body": ')
    for case, qid in [('unknown question', 999999999), ('question id 0', 0)]:
        post_answer(case, qid, expect=(404,))
    B.send('answer', 'question id not numeric', 'POST', '/qa/questions/abc/answers',
           B.answer(B.tok()), expect=(404,))
    lag = learn(B, cl, m, rep, [c for c in B.cases if c['kind'] == 'answer'], a.poll)
    print('E: %d answer POSTs; created rows learned within %.2fs' % (
        len([c for c in B.cases if c['kind'] == 'answer']), lag))
    qtouched = [c['id'] for c in newq] + [c['qid'] for c in B.cases if c['kind'] == 'answer' and c.get('id')]
    chk.run('E answers posted', all_specs(qtouched))

    # ================================================================ F: Q&A helpful/report
    newa = [c for c in B.cases if c['kind'] == 'answer' and c.get('id')]
    q_old = vis_q(p_manyq, True)[-1]['id']
    for i in range(2):
        put('question', 'question helpful, existing', '/qa/questions/%s/helpful', q_old)
    put('question', 'question helpful, new', '/qa/questions/%s/helpful', newq[-1]['id'] if newq else None)
    put('question', 'question helpful, prefix route', '/api/fec2/hr-rfp/qa/questions/%s/helpful', q_new)
    q_rep = next(q['id'] for p in P for q in vis_q(p, True) if q['id'] not in aq and q['id'] != q_many)
    put('question', 'question report, existing with answers', '/qa/questions/%s/report', q_rep)
    q_rep_new = nid([c for c in newq if c['pid'] == p_manyq])
    put('question', 'question report, new', '/qa/questions/%s/report', q_rep_new)
    put('question', 'question helpful on a reported question', '/qa/questions/%s/helpful', q_rep_new, clear=False)
    a_old = sorted(m.answers_sorted(q_many), key=lambda x: x['id'])[0]['id']
    for i in range(2):
        put('answer', 'answer helpful, existing', '/qa/answers/%s/helpful', a_old)
    a_new = nid([c for c in newa if c['qid'] == q_many])
    put('answer', 'answer helpful, new', '/qa/answers/%s/helpful/', a_new)
    a_conc = nid([c for c in newa if c['qid'] == q_new])
    with cf.ThreadPoolExecutor(10) as ex:
        list(ex.map(lambda _: put('answer', 'answer helpful, 10 concurrent', '/qa/answers/%s/helpful', a_conc),
                    range(10)))
    a_rep = next((x['id'] for qid in aq + [q_many] for x in m.answers_sorted(qid)
                  if m.answer_photos.get(x['id']) and x['id'] not in m.new_ids['answer']),
                 m.answers_sorted(aq[0])[0]['id'])
    put('answer', 'answer report, existing with photos', '/qa/answers/%s/report', a_rep)
    a_rep_new = nid([c for c in newa if c['qid'] == q_many][::-1])
    put('answer', 'answer report, new', '/api/fec2/hr-rfp/qa/answers/%s/report', a_rep_new)
    put('answer', 'answer helpful on a reported answer', '/qa/answers/%s/helpful', a_rep_new, clear=False)
    for kind, case, path in [('question', 'unknown id', '/qa/questions/999999999/helpful'),
                             ('question', 'unknown id', '/qa/questions/999999999/report'),
                             ('question', 'id 0', '/qa/questions/0/helpful'),
                             ('question', 'id not numeric', '/qa/questions/abc/report'),
                             ('answer', 'unknown id', '/qa/answers/999999999/helpful'),
                             ('answer', 'unknown id', '/qa/answers/999999999/report'),
                             ('answer', 'id > 2^64', '/qa/answers/99999999999999999999/helpful'),
                             ('answer', 'id not numeric', '/qa/answers/x/report')]:
        put(kind, case, path, expect=(404,))
    for kind, meth, path in [('question', 'GET', '/qa/questions/%d/helpful' % q_old),
                             ('answer', 'POST', '/qa/answers/%d/report' % a_old)]:
        B.send(kind, 'wrong method', meth, path, None, expect=(405,))
    qtouched += [q for q in (q_old, q_rep, q_rep_new, q_many) if q]
    chk.run('F Q&A helpful/report', all_specs(qtouched))
    # answers of reported questions: the contract leaves it open
    for qid in [q for q in (q_rep, q_reported) if q]:
        s, h, b = cl.req('GET', '/qa/questions/%d/answers' % qid)
        rep.info('GET /qa/questions/%d/answers of a reported question -> %s %s' % (qid, s, short(b, 100)))

    # ================================================================ G: cart, interactions
    skus = sorted(i for v in m.skus.values() for i, _, _ in v)
    sk = rnd.sample(skus, 4)
    toks = {'A': 'model-writes-cart-A', 'B': 'model-writes-cart-B', None: NOAUTH}

    def get_cart(who):
        s, h, b = cl.req('GET', '/cart', auth=toks[who])
        if s != 200:
            rep.bad(('GET /cart', 'status', '200 vs %s' % s), (who, short(b)))
            return None, None
        if not h.get('content-type', '').startswith('application/json'):
            rep.bad(('GET /cart', '$', 'content-type'), (who, h.get('content-type')))
        try:
            body = json.loads(b, object_pairs_hook=collections.OrderedDict)
        except Exception:
            rep.bad(('GET /cart', '$', 'bad json'), (who, short(b)))
            return None, None
        cart = collections.OrderedDict()
        if not isinstance(body, list):
            rep.bad(('GET /cart', '$', 'not an array'), (who, short(b)))
            return None, None
        for it in body:
            if not (isinstance(it, dict) and list(it.keys()) == ['sku_id', 'count'] and isinstance(it['sku_id'], int)
                    and not isinstance(it['sku_id'], bool) and isinstance(it['count'], str) and it['count'].isdigit()):
                rep.bad(('GET /cart', '$[]', 'item shape'), (who, short(it)))
                continue
            if it['sku_id'] in cart:
                rep.bad(('GET /cart', '$[]', 'sku listed twice'), (who, short(body)))
            cart[it['sku_id']] = int(it['count'])
        return cart, body
    base = {w: get_cart(w)[0] for w in toks}
    adds = {w: collections.Counter() for w in toks}

    def post_cart(case, who, body, expect=(201,), clear=True, sku=None):
        c = B.send('cart', case, 'POST', '/cart', body, expect=expect, clear=clear, auth=toks[who])
        if c['status'] == 201 and sku is not None:
            adds[who][sku] += 1
    post_cart('sku_id number', 'A', {'sku_id': sk[0]}, sku=sk[0])
    post_cart('same sku again', 'A', {'sku_id': sk[0]}, sku=sk[0])
    post_cart('skuId', 'A', {'skuId': sk[1]}, sku=sk[1])
    post_cart('sku_id numeric string', 'A', {'sku_id': str(sk[2])}, sku=sk[2])
    post_cart('skuId numeric string', 'A', {'skuId': str(sk[1])}, sku=sk[1])
    post_cart('other token', 'B', {'sku_id': sk[3]}, sku=sk[3])
    post_cart('no Authorization (anonymous cart)', None, {'sku_id': sk[2]}, sku=sk[2])
    post_cart('unknown sku', 'A', {'sku_id': skus[-1] + 100000}, expect=(422,))
    post_cart('sku_id 0', 'A', {'sku_id': 0}, expect=(422,))
    post_cart('sku_id "abc"', 'A', {'sku_id': 'abc'}, expect=(422,))
    post_cart('sku_id missing', 'A', {}, expect=(422,), clear=False)
    post_cart('malformed JSON', 'A', b'{"sku_id": ', expect=(422, 400), clear=False)
    t0 = time.time()
    while True:
        now = {w: get_cart(w) for w in toks}
        ok = all(base[w] is not None and now[w][0] is not None and
                 dict(now[w][0]) == dict(collections.Counter(base[w]) + adds[w]) for w in toks)
        if ok or time.time() - t0 > a.poll:
            break
        time.sleep(0.05)
    chk.lag['G cart'] = dict(n=3, first=0, delayed=[time.time() - t0] if ok else [], failed=0 if ok else 3)
    for w in toks:
        if base[w] is None or now[w][0] is None:
            continue
        exp = collections.Counter(base[w]) + adds[w]
        if dict(now[w][0]) != dict(exp):
            rep.bad(('GET /cart', 'contents after POST /cart', 'value'),
                    ('token %s' % w, 'expected %s' % short({str(k): str(v) for k, v in exp.items()}),
                     'got %s' % short(now[w][1])))
        else:
            order = list(now[w][0])
            kind = ('sku_id order' if order == sorted(order) else '') + \
                   (' / insertion order' if order == list(dict.fromkeys(list(base[w]) + list(adds[w]))) else '')
            rep.info('GET /cart (%s) matches; item order: %s' % (w, kind.strip(' /') or short(order)))
    # interactions
    for case, body, exp, clear in [
            ('valid', {'element': 'button#add', 'widget': 'overview', 'time': '2021-06-30T12:00:00.000Z'}, (201,), True),
            ('valid, prefix', {'element': 'img', 'widget': 'reviews', 'time': str(int(time.time()))}, (201,), True),
            ('element missing', {'widget': 'overview', 'time': 'now'}, (422,), True),
            ('widget missing', {'element': 'a', 'time': 'now'}, (422,), True),
            ('element not a string', {'element': 5, 'widget': 'overview', 'time': 'now'}, (422,), False),
            ('time missing', {'element': 'a', 'widget': 'qa'}, (201,), False)]:
        B.send('interaction', case, 'POST', '/api/fec2/hr-rfp/interactions' if 'prefix' in case else '/interactions',
               body, expect=exp, clear=clear)

    # ================================================================ H: final
    time.sleep(0.3)
    chk.run('H final', all_specs(qtouched))
    # conditional GETs with the ETag seen before the writes: a changed resource must come back 200
    A, H = chk.seen.get('A baseline', {}), chk.seen.get('H final', {})
    n = changed = 0
    for path, (etag, before) in A.items():
        if not etag or path not in H:
            continue
        n += 1
        s, h, b = cl.req('GET', path, headers={'If-None-Match': etag})
        if H[path][1] != before:
            changed += 1
            if s != 200:
                rep.bad(('conditional GET', 'If-None-Match with the pre-write ETag of a changed resource',
                         'status 200 vs %s' % s), ('GET ' + path, 'etag ' + etag))
        elif s not in (200, 304):
            rep.bad(('conditional GET', 'unchanged resource', 'status %s' % s), ('GET ' + path,))
        if s == 304 and b:
            rep.bad(('conditional GET', '304', 'has a body'), ('GET ' + path,))
    print('H: %d conditional GETs with pre-write ETags (%d of changed resources)' % (n, changed))


def report(a, m, rep, B, chk, jpath, run, journal):
    print('\n=== writes sent ===')
    kinds = collections.Counter((c['kind'], c['method'], c['status']) for c in B.cases)
    for (k, meth, s), n in sorted(kinds.items(), key=str):
        print('  %-12s %-4s -> %s  x%d' % (k, meth, s, n))
    print('\n=== GET checks: phase, checks, matched at once, matched after polling (max lag), failed after %.1fs ===' % a.poll)
    for ph, st in chk.lag.items():
        d = st['delayed']
        print('  %-28s %5d  %5d  %5d (max %.3fs)  %5d' % (ph, st['n'], st['first'], len(d), max(d) if d else 0,
                                                        st['failed']))
    if m.tainted:
        print('\nUNMODELABLE: products left in a state the model cannot follow: %s' % sorted(m.tainted))
    print('\n=== mismatch classes (%d) ===' % len(rep.classes))
    for key, (n, exs) in rep.classes.items():
        print('\n[%s] %s  %s   (%d)' % (key[0], key[1], key[2], n))
        for ex in exs:
            print('    ' + ' | '.join(str(x) for x in ex))
    print('\n=== informational (choices the contract leaves open) ===')
    for x in rep.infos:
        print('   ', *x)
    print('\njournal: %s (run %d, %d writes in total)' % (jpath, run, len(journal['ops']) + len(m.ops)))
    print('total time %.1fs' % (time.time() - a.T0))
    if a.json_out:
        with open(a.json_out, 'w') as fh:
            json.dump({'classes': [[list(k), v[0], v[1]] for k, v in rep.classes.items()], 'infos': rep.infos,
                       'lag': chk.lag}, fh, indent=1, default=str)
    sys.exit(1 if rep.classes else 0)


if __name__ == '__main__':
    main()
