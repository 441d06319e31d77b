//! JSON string escaping, which rendering a long list of reviews spends much of its time in (a
//! refresh after a write re-renders the whole list): the writer's block-at-a-time search for
//! bytes to escape against the byte-at-a-time loop it replaced (kept here for the comparison).
//! `cargo bench --bench render`; the figures are in the README.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

/// The loop `render::json::push_str` used before: one match a byte.
fn push_str_bytewise(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn escaping(c: &mut Criterion) {
    let body = "Really comfortable, and the fabric holds up after a dozen washes. ".repeat(4);
    let quoted = "I'd say it runs \"small\" -- order a size up.\nGreat color though. ".repeat(4);
    for (name, text) in [
        ("summary (30 B)", "Best purchase this year, truly"),
        ("review body (260 B)", body.as_str()),
        (
            "review body with quotes and a line break (260 B)",
            quoted.as_str(),
        ),
    ] {
        let mut g = c.benchmark_group(name);
        let mut out = Vec::with_capacity(4096);
        g.bench_function("block at a time (render::json::push_str)", |b| {
            b.iter(|| {
                out.clear();
                atelier::render::json::push_str(&mut out, black_box(text));
            })
        });
        g.bench_function("byte at a time (before)", |b| {
            b.iter(|| {
                out.clear();
                push_str_bytewise(&mut out, black_box(text));
            })
        });
        g.finish();
    }
}

criterion_group!(benches, escaping);
criterion_main!(benches);
