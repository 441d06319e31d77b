//! The load benchmark's ceiling: a hyper server on the same runtime settings as `atelier
//! serve` that answers every request with one constant JSON body, so the benchmark can tell
//! what this machine and its load generator allow from what the server costs.
//!
//!   cargo run --release --example constant_body -- 127.0.0.1:4501 1400

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:4501".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1400);
    let body = Bytes::from(format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(size.saturating_sub(10))
    ));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("constant body of {} bytes on http://{listen}", body.len());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let mut r = Response::new(Full::new(body.clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
