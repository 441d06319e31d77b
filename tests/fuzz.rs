//! Fuzzing of everything that reads what a client sends before the database sees it: the route
//! and query parser, the five body validators, the `Accept-Encoding` reader, the fast lane's
//! head reader. Inputs are random bytes and mutations (flips, insertions, deletions, splices, and
//! tokens known to trouble parsers) of valid requests; none may panic, integer overflow
//! included (the test profile checks it), and a validator that accepts a body must give the
//! values the contract allows.
//!
//! CI runs 200,000 inputs; the documented run is ten million:
//!
//!     FUZZ_INPUTS=10000000 cargo test --test fuzz -- --nocapture
//!
//! `FUZZ_SEED` picks another stream of inputs (the seed is printed, so a failure can be
//! replayed).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use atelier::dataset::rng::Rng;
use atelier::http::{body, fast, respond, route};
use hyper::Method;

const PATHS: &[&str] = &[
    "/products",
    "/products/1",
    "/products/12/styles",
    "/products/9/related",
    "/reviews",
    "/reviews/meta",
    "/reviews/3/helpful",
    "/reviews/3/report",
    "/qa/questions",
    "/qa/questions/5/answers",
    "/qa/questions/5/helpful",
    "/qa/answers/7/report",
    "/cart",
    "/interactions",
    "/api/fec2/hr-rfp/products/1/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.yaml",
];

const QUERIES: &[&str] = &[
    "page=2&count=5",
    "product_id=1&sort=newest&count=9007199254740991",
    "product_id=1&sort=relevant&page=1&count=5",
    "product_id=2",
    "count=0",
    "page=18446744073709551615&count=18446744073709551615",
    "product_id=%31&sort=helpful",
];

const BODIES: &[&str] = &[
    r#"{"product_id":2,"rating":3,"summary":"Okay","body":"Decent lenses.","recommend":false,"name":"n","email":"n@example.com","photos":["https://example.com/a.jpg"],"characteristics":{"5":3}}"#,
    r#"{"body":"Does it fit?","name":"asker","email":"a@example.com","product_id":1}"#,
    r#"{"body":"Yes.","name":"answerer","email":"b@example.com","photos":["http://example.com/c.jpg"]}"#,
    r#"{"sku_id":1}"#,
    r#"{"skuId":"3"}"#,
    r#"{"element":"img","widget":"Overview","time":"2020-01-01"}"#,
];

const HEADS: &[&str] = &[
    "GET /products/1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
    "GET /reviews?product_id=2&count=5 HTTP/1.1\r\nConnection: close\r\nX-Request-Id: a\r\n\r\n",
    "GET /qa/questions/3/answers HTTP/1.1\r\nAuthorization: t\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "POST /cart HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"sku_id\":1}",
];

/// Bits that have broken parsers before.
const TOKENS: &[&str] = &[
    "%",
    "%0",
    "%00",
    "%zz",
    "%2F",
    "%ff",
    "+",
    "&",
    "=",
    "?",
    "/",
    "//",
    "..",
    ";",
    "#",
    "-1",
    "0",
    "00",
    "+1",
    "1e3",
    "1.5",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "-9223372036854775808",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\\u0000",
    "\\ud800",
    "\u{0}",
    "\u{feff}",
    "é",
    "😀",
    " ",
    "\t",
    "\r\n",
    "[[[[[[[[[[[[[[[[",
    "}}}}",
    "\"product_id\":",
    "\"photos\":[",
    "\"characteristics\":{\"1\":",
    ",",
    ":",
];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

fn mutated(rng: &mut Rng, seeds: &[&str]) -> Vec<u8> {
    if rng.below(8) == 0 {
        let len = rng.below(64) as usize;
        return (0..len).map(|_| rng.below(256) as u8).collect();
    }
    let mut input = pick(rng, seeds).as_bytes().to_vec();
    for _ in 0..rng.below(4) {
        let at = rng.below(input.len() as u64 + 1) as usize;
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = pick(rng, TOKENS).as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + rng.below(8) as usize).min(input.len());
                input.drain(at..end);
            }
            3 => {
                let other = pick(rng, seeds).as_bytes();
                let from = rng.below(other.len() as u64 + 1) as usize;
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            4 => {
                let byte = rng.below(256) as u8;
                input.insert(at, byte);
            }
            _ => {
                let copy = input[..at].to_vec();
                input.extend_from_slice(&copy);
            }
        }
    }
    input
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `f` on `input`; a panic fails the test with the input that caused it.
fn survives(what: &str, input: &[u8], seed: u64, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!(
            "{what} panicked on {:?} (FUZZ_SEED={seed})",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn parsers_and_validators_survive_arbitrary_input() {
    let inputs: u64 = std::env::var("FUZZ_INPUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng::new(seed);
    // A panic is reported once, with its input, by `survives`.
    std::panic::set_hook(Box::new(|_| {}));
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ];
    let started = Instant::now();
    let mut accepted = [0u64; 4];
    for n in 0..inputs {
        match n % 4 {
            0 => {
                let path = text(&mutated(&mut rng, PATHS));
                let query = (rng.below(3) > 0).then(|| text(&mutated(&mut rng, QUERIES)));
                let method = &methods[rng.below(methods.len() as u64) as usize];
                survives("route::parse", path.as_bytes(), seed, || {
                    if route::parse(method, &path, query.as_deref()).is_ok() {
                        accepted[0] += 1;
                    }
                });
            }
            1 => {
                let bytes = mutated(&mut rng, BODIES);
                survives("a body validator", &bytes, seed, || {
                    let product = (rng.below(2) == 0).then_some(1);
                    let results = [
                        body::review(&bytes).is_ok_and(|r| (1..=5).contains(&r.rating)),
                        body::question(&bytes, product).is_ok(),
                        body::answer(&bytes).is_ok(),
                        body::cart_sku(&bytes).is_ok_and(|sku| sku > 0),
                        body::interaction(&bytes).is_ok(),
                    ];
                    accepted[1] += results.iter().filter(|&&ok| ok).count() as u64;
                });
            }
            2 => {
                let bytes = mutated(&mut rng, HEADS);
                survives("the fast lane's head reader", &bytes, seed, || {
                    if let fast::Read::Head(head, len) = fast::read_head(
                        &bytes,
                        fast::HeadLimits {
                            max_headers: 64,
                            max_bytes: 16 * 1024,
                        },
                    ) {
                        assert!(len <= bytes.len() && head.target.starts_with('/'));
                        accepted[3] += 1;
                    }
                });
            }
            _ => {
                let bytes = mutated(
                    &mut rng,
                    &[
                        "gzip, deflate, br",
                        "gzip;q=0",
                        "*;q=0.5",
                        "application/json; charset=utf-8",
                    ],
                );
                survives("a header reader", &bytes, seed, || {
                    // Raw bytes, as the fast lane reads them off the socket.
                    if respond::accepts_gzip(std::iter::once(&bytes[..])) {
                        accepted[2] += 1;
                    }
                });
            }
        }
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "fuzz: {inputs} inputs (seed {seed}) in {:.1} s, no panic; accepted: {} routes, {} bodies, {} gzip headers, {} lane heads",
        started.elapsed().as_secs_f64(),
        accepted[0],
        accepted[1],
        accepted[2],
        accepted[3]
    );
    // Mutations of valid inputs are often still valid: the fuzzer reaches past the first check.
    assert!(accepted.iter().all(|&a| a > inputs / 300), "{accepted:?}");
}
