//! An optional front end on may_minihttp (feature `may-server`, `atelier serve --engine may`),
//! kept so the choice of hyper can be re-measured (docs/benchmarks.md, "The front end").
//!
//! may_minihttp runs its own coroutine runtime; each request is turned into the same
//! `http::Request` the hyper front end builds and answered by the same [`App::handle`], run
//! with `Handle::block_on` on the tokio runtime that also drives the pool and the change feed.
//! A hit completes in one poll; a miss blocks one may worker thread for its database round
//! trip. Known limits of may_minihttp that keep it from being the default: at most 16 request
//! headers, response headers must be `&'static str` (interned here), no HEAD semantics
//! (HEAD gets an empty body with `Content-Length: 0`), and whole bodies only (a `GET
//! /products` page of more than `--max-page-rows` rows, which hyper sends as it is read, is
//! gathered whole first).

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

use super::App;

/// Starts serving on `addr` in may's runtime; requests are answered by `app` on `runtime`.
pub fn start(app: Arc<App>, runtime: tokio::runtime::Handle, addr: SocketAddr) -> io::Result<()> {
    // may's default coroutine stack (32 KB) is too small for the request future; 512 KB.
    may::config().set_stack_size(0x10000);
    let factory = Factory {
        app,
        runtime,
        headers: Arc::new(Mutex::new(HashMap::new())),
    };
    // The returned coroutine handle runs until the process exits.
    HttpServiceFactory::start(factory, addr).map(|_| ())
}

struct Factory {
    app: Arc<App>,
    runtime: tokio::runtime::Handle,
    /// `Name: value` lines handed to may_minihttp, which only takes static strings. Responses
    /// use a small fixed set of header values, so this stays small.
    headers: Arc<Mutex<HashMap<String, &'static str>>>,
}

struct Service {
    app: Arc<App>,
    runtime: tokio::runtime::Handle,
    headers: Arc<Mutex<HashMap<String, &'static str>>>,
}

impl HttpServiceFactory for Factory {
    type Service = Service;

    fn new_service(&self, _id: usize) -> Service {
        Service {
            app: Arc::clone(&self.app),
            runtime: self.runtime.clone(),
            headers: Arc::clone(&self.headers),
        }
    }
}

impl Service {
    fn intern(&self, line: String) -> &'static str {
        let mut headers = match self.headers.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = headers.get(&line) {
            return s;
        }
        let leaked: &'static str = Box::leak(line.clone().into_boxed_str());
        headers.insert(line, leaked);
        leaked
    }
}

impl HttpService for Service {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        let mut builder = hyper::Request::builder()
            .method(req.method())
            .uri(req.path());
        for h in req.headers() {
            builder = builder.header(h.name, h.value);
        }
        let limit = self.app.settings.body_limit as u64 + 1;
        let mut body = Vec::new();
        if req.method() == "POST" || req.method() == "PUT" {
            req.body().take(limit).read_to_end(&mut body)?;
        }
        let request = match builder.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(_) => {
                rsp.status_code(400, "Bad Request").body("Bad Request");
                return Ok(());
            }
        };
        let app = Arc::clone(&self.app);
        let (parts, bytes) = self.runtime.block_on(async move {
            let (parts, body) = app.handle(request).await.into_parts();
            // may_minihttp sends a body whole: a page sent in runs is gathered first, and one
            // cut short is a 503 here rather than a 200 with part of a page.
            match body.collect().await {
                Ok(collected) => (parts, collected.to_bytes()),
                Err(_) => {
                    let (parts, body) = super::respond::unavailable().into_parts();
                    let bytes = body.collect().await.map(|c| c.to_bytes());
                    (parts, bytes.unwrap_or_default())
                }
            }
        });
        let reason = parts.status.canonical_reason().unwrap_or("Unknown");
        rsp.status_code(usize::from(parts.status.as_u16()), reason);
        for (name, value) in &parts.headers {
            // Interned lines live as long as the process: the request id (new on every
            // response) and the entity tag (new with every change) would grow that without
            // bound, so this front end sends neither (and so answers no If-None-Match).
            if matches!(name.as_str(), "x-request-id" | "etag") {
                continue;
            }
            if let Ok(value) = value.to_str() {
                rsp.header(self.intern(format!("{}: {value}", name.as_str())));
            }
        }
        rsp.body_mut().extend_from_slice(&bytes);
        Ok(())
    }
}
