//! The HTTP edge: the accept loop with graceful shutdown, and the request handler that turns a
//! [`Route`] into a response from the cache.

pub mod body;
pub mod conn;
pub mod fast;
pub mod lifecycle;
#[cfg(feature = "may-server")]
pub mod may_server;
pub mod metrics;
pub mod reply;
pub mod respond;
pub mod route;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use self::body::BodyError;
use self::conn::{Admission, Connections, WriteDeadline};
use self::metrics::{Gauges, Metrics};
use self::reply::Reply;
use self::respond::Body;
use self::route::{Route, ROUTE_LABELS};
use crate::cache::fill::ProductRuns;
use crate::cache::snapshot::{self, SnapshotError, SnapshotStatus, Written};
use crate::cache::warm::{self, WarmupOutcome, WarmupStatus};
use crate::cache::{Key, ResponseCache};
use crate::config::{Precompute, ServeSettings};
use crate::logging;
use crate::pg::database::Database;
use crate::pg::feed::{self, ChangeSink, FeedPosition, FeedStart, FeedStatus};
use crate::pg::pool::Pool;
use crate::pg::write::{self, WriteError};
use crate::pg::DbError;
use crate::render::{self, Rendered, RenderedRef};
use crate::stripes::Counters;
use crate::task::{self, supervised};

/// The OpenAPI 3.1 description of every route, served at `GET /openapi.yaml`. The tests
/// validate every response they receive against it.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The header that carries a request's id, from the client or the balancer, or ours.
const X_REQUEST_ID: &str = "x-request-id";
/// A write's retry key (the IETF draft's `Idempotency-Key`), the caller's: a helpful vote
/// whose key the caller spent on the same row already counts no more, and a POST whose key
/// came with the same request already is not made again. nginx passes on a client's key, or
/// sends its `$request_id`, the same on every attempt of a request (deploy/nginx.conf). Not
/// `X-Request-Id`: a client that traces its requests under one fixed id must still have every
/// vote counted.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The body of the 400 for an `Idempotency-Key` that is not one.
const BAD_RETRY_KEY: &str = "Error: invalid Idempotency-Key provided";
/// What a committed write keeps of its request's time to answer in, its own refresh cut short
/// if need be ([`App::write`]).
const ANSWER_MARGIN: Duration = Duration::from_millis(50);

/// What a write takes of its request besides its route and body.
struct WriteRequest<'a> {
    /// The request's target (path and query) as sent: part of a POST's retry claim.
    target: &'a str,
    /// The caller's token (`Authorization`), which names its cart; empty without one.
    token: &'a str,
    /// The request's `Idempotency-Key`: a retry carries the same.
    retry_key: Option<&'a str>,
}

/// What answering a request came to, before the headers every response gets.
struct Outcome {
    /// The route's index in [`ROUTE_LABELS`], for the metrics.
    label: usize,
    response: Response<Body>,
    /// Why a 5xx happened: its cause chain, for its log line.
    cause: Option<String>,
}

impl Outcome {
    fn of(label: usize, response: Response<Body>) -> Outcome {
        Outcome {
            label,
            response,
            cause: None,
        }
    }
}

/// Everything a request handler reads: shared by all connections of one instance.
pub struct App {
    pub cache: Arc<ResponseCache>,
    /// The primary's pool (writes, the feed, `/readyz`), and the replicas reads may go to.
    pub db: Arc<Database>,
    pub metrics: Metrics,
    pub settings: ServeSettings,
    cors_origin: HeaderValue,
    ready: AtomicBool,
    feed: std::sync::OnceLock<Arc<FeedStatus>>,
    pub warmup: Arc<WarmupStatus>,
    /// Catalog snapshots written and restored (see [`crate::cache::snapshot`]).
    pub snapshots: Arc<SnapshotStatus>,
    /// The open connections, under `settings.limits.max_connections`.
    pub connections: Connections,
    /// This instance's part of the request ids it makes, and how many it has made.
    instance_tag: u32,
    requests_seen: Counters,
    /// Requests past, for sampling the access log.
    requests_logged: std::sync::atomic::AtomicU64,
    /// Set when the instance begins to drain (see [`Running::drain`]).
    draining: AtomicBool,
}

impl App {
    pub fn new(settings: ServeSettings, db: Database) -> App {
        // Every response carries it: the default is a static value, whose clone touches no
        // reference count shared by the workers.
        let cors_origin = match settings.cors_origin.as_str() {
            "*" => HeaderValue::from_static("*"),
            origin => HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("*")),
        };
        App {
            connections: Connections::new(settings.limits.max_connections),
            cache: Arc::new(
                ResponseCache::with_compaction(settings.cache_bytes, settings.compaction)
                    .with_dictionary_sample(settings.dictionary_sample_bytes)
                    .sharded(settings.shard),
            ),
            db: Arc::new(db),
            metrics: Metrics::default(),
            settings,
            cors_origin,
            ready: AtomicBool::new(false),
            feed: std::sync::OnceLock::new(),
            warmup: Arc::new(WarmupStatus::default()),
            snapshots: Arc::default(),
            instance_tag: instance_tag(),
            requests_seen: Counters::new(1),
            requests_logged: std::sync::atomic::AtomicU64::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// Starts the change feed that keeps this instance's cache current.
    fn start_feed(
        &self,
        database: tokio_postgres::Config,
        start: FeedStart,
    ) -> tokio::task::JoinHandle<()> {
        let sink: Arc<dyn ChangeSink> = self.cache.clone();
        let fence = self.db.feed_fence();
        let (status, task) = feed::spawn(database, sink, self.settings.feed.clone(), start, fence);
        let _ = self.feed.set(status);
        task
    }

    /// The change feed's state, once started.
    pub fn feed_status(&self) -> Option<&Arc<FeedStatus>> {
        self.feed.get()
    }

    /// Writes the catalog to the snapshot directory, if one is configured (None if not), as of
    /// the change feed's position: what a warm restart loads.
    pub async fn save_snapshot(&self) -> Result<Option<Written>, SnapshotError> {
        let Some(snapshots) = &self.settings.snapshot else {
            return Ok(None);
        };
        if self.settings.precompute != Precompute::All {
            return Ok(None);
        }
        let feed = self
            .feed
            .get()
            .ok_or(SnapshotError::NotNow("the change feed has not started"))?;
        snapshot::save(
            &self.cache,
            &self.db.primary,
            &snapshots.dir,
            feed,
            &self.warmup,
            &self.snapshots,
        )
        .await
        .map(Some)
    }

    /// Opens the pool's first connection; `/readyz` answers 503 until this has succeeded.
    pub async fn warm_up(&self) -> Result<(), DbError> {
        self.db.primary.get().await?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Answers one request. Never fails: every error is a response, and every 5xx a log line.
    /// Generic over the body so benches and tests can call it without a socket.
    ///
    /// The request gets `limits.request_timeout` (503 past it), and an id: the `X-Request-Id`
    /// it came with (from nginx or the load balancer), or a new one, echoed in the response and
    /// in every log line about it.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        // The head stays here, borrowed by the answer, for the log and the entity tag after.
        let (head, body) = req.into_parts();
        let id = self.request_id(&head.headers);
        let (method, uri) = (&head.method, &head.uri);
        let limit = self.settings.limits.request_timeout;
        let label_of = || {
            route::parse(method, uri.path(), uri.query())
                .map_or(ROUTE_LABELS.len() - 1, |r| r.label_index())
        };
        // A panic (a bug: nothing a client sends should cause one) is a 500 with a log line,
        // not a connection dropped without a word.
        let answering =
            std::panic::AssertUnwindSafe(self.respond(&head, body, started + limit)).catch_unwind();
        let Outcome {
            label,
            mut response,
            cause,
        } = match task::within(limit, answering).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => Outcome {
                label: label_of(),
                response: respond::internal_error(),
                cause: Some(format!(
                    "the handler panicked: {}",
                    logging::panic_message(&*panic)
                )),
            },
            Err(_) => Outcome {
                label: label_of(),
                response: respond::unavailable(),
                cause: Some(format!(
                    "the request ran past --request-timeout-ms ({} ms)",
                    limit.as_millis()
                )),
            },
        };
        if let Some(wanted) = head.headers.get(header::IF_NONE_MATCH) {
            if let Some(not_modified) = respond::not_modified(&response, wanted) {
                response = not_modified;
            }
        }
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.cors_origin.clone(),
        );
        // HTTP/1.0 has no chunked coding: hyper ends a body of unknown length (a products page
        // in runs) by closing the connection.
        let ends_by_closing = head.version == hyper::Version::HTTP_10
            && head.method != Method::HEAD
            && hyper::body::Body::size_hint(response.body())
                .exact()
                .is_none();
        if self.is_draining() || ends_by_closing {
            // To a 1.0 client that asked to keep the connection, hyper adds its `keep-alive`
            // to a 1.1 response's `Connection` (`close, keep-alive`), but not to a 1.0 one's.
            if head.version == hyper::Version::HTTP_10 {
                *response.version_mut() = hyper::Version::HTTP_10;
            }
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        self.metrics.record(label, status, elapsed);
        let line = RequestLine {
            id: id.to_str().unwrap_or("-"),
            method: method.as_str(),
            target: uri,
            is_readyz: status == 503
                && matches!(
                    route::parse(method, uri.path(), uri.query()),
                    Ok(Route::Readyz)
                ),
        };
        self.log(&line, status, elapsed, cause.as_deref());
        response.headers_mut().insert(X_REQUEST_ID, id);
        response
    }

    /// The request's own `X-Request-Id` if it is one ([`is_request_id`]), or a new one
    /// ([`Self::new_request_id`]).
    fn request_id(&self, headers: &hyper::HeaderMap) -> HeaderValue {
        if let Some(given) = supplied_request_id(headers) {
            return given.clone();
        }
        HeaderValue::from_bytes(&self.new_request_id()).unwrap_or(HeaderValue::from_static("-"))
    }

    /// A new request id: this instance's random tag and a number no other request of this
    /// instance gets ([`Counters::next_unique`]), 24 hex digits.
    pub(crate) fn new_request_id(&self) -> [u8; 24] {
        let n = self.requests_seen.next_unique(0);
        let mut id = [0u8; 24];
        let digits = (u128::from(self.instance_tag) << 64) | u128::from(n);
        for (i, digit) in id.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((digits >> (92 - 4 * i)) & 0xf) as usize];
        }
        id
    }

    /// The request's log line, if it gets one: every 5xx, with its cause; a request slower
    /// than `--slow-request-ms`; one in `--access-log-sample` of the rest.
    fn log(&self, line: &RequestLine<'_>, status: u16, elapsed: Duration, cause: Option<&str>) {
        let RequestLine {
            id: request_id,
            method,
            target: uri,
            is_readyz,
        } = *line;
        let ms = elapsed.as_secs_f64() * 1e3;
        // `/readyz` answers 503 by design while the instance is not ready: a balancer asks it
        // every few seconds, and the log says why elsewhere (warm-up, feed).
        if status >= 500 && !(status == 503 && is_readyz) {
            let cause = cause.unwrap_or("not recorded");
            tracing::error!(request_id, %method, %uri, status, ms, cause, "request failed");
        } else if elapsed >= self.settings.slow_request {
            tracing::warn!(request_id, %method, %uri, status, ms, "slow request");
        } else if self.settings.access_log_sample > 0
            && self
                .requests_logged
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.settings.access_log_sample)
        {
            tracing::info!(request_id, %method, %uri, status, ms, "request");
        }
    }

    async fn respond<B>(
        &self,
        req: &hyper::http::request::Parts,
        body: B,
        deadline: Instant,
    ) -> Outcome
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let unmatched = ROUTE_LABELS.len() - 1;
        if req.method == Method::OPTIONS {
            return Outcome::of(unmatched, respond::preflight());
        }
        let route = match route::parse(&req.method, req.uri.path(), req.uri.query()) {
            Ok(route) => route,
            Err(e) => return Outcome::of(unmatched, respond::route_error(&e)),
        };
        let label = route.label_index();
        let token = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(allowed) = &self.settings.auth_tokens {
            let operational = matches!(
                route,
                Route::Healthz | Route::Readyz | Route::Metrics | Route::OpenApi
            );
            if !operational && !token.is_some_and(|t| allowed.0.contains(t)) {
                let unauthorized = respond::text(StatusCode::UNAUTHORIZED, "Unauthorized");
                return Outcome::of(label, unauthorized);
            }
        }
        if route.is_write() {
            if has_coding_besides_chunked(&req.headers) {
                // hyper takes the chunked framing off and hands over what the other coding
                // left: JSON no parser would read. RFC 9112 (6.1) names the answer.
                return Outcome {
                    label,
                    response: respond::text(StatusCode::NOT_IMPLEMENTED, "Not Implemented"),
                    cause: Some(
                        "the body's Transfer-Encoding names a coding besides chunked".into(),
                    ),
                };
            }
            let token = token.unwrap_or("").to_owned();
            // A retry of this request carries the same key: a vote counts once, a POST is
            // made once. A key this server would not keep is refused, not ignored: its sender
            // counts on its retries being safe.
            let Ok(retry_key) = retry_key(&req.headers) else {
                let refused = respond::text(StatusCode::BAD_REQUEST, BAD_RETRY_KEY);
                return Outcome::of(label, refused);
            };
            let length = req
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let reading = body::read(body, length, self.settings.body_limit);
            let bytes = tokio::time::timeout(self.settings.limits.body_timeout, reading)
                .await
                .unwrap_or(Err(BodyError::TooSlow));
            let request = WriteRequest {
                target: req
                    .uri
                    .path_and_query()
                    .map_or("", |target| target.as_str()),
                token: &token,
                retry_key: retry_key.as_deref(),
            };
            let written = self.write(&route, request, bytes, deadline);
            let (response, cause) = match written.await {
                Ok(response) => (response, None),
                Err((response, e)) => (response, Some(logging::cause_chain(&e))),
            };
            return Outcome {
                label,
                response,
                cause,
            };
        }
        let gzip = respond::accepts_gzip(
            req.headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .map(HeaderValue::as_bytes),
        );
        match self.read(&route, token.unwrap_or(""), gzip).await {
            Ok(response) => Outcome::of(label, response),
            Err(e) => Outcome {
                label,
                response: if e.is_unavailable() {
                    respond::unavailable()
                } else {
                    respond::internal_error()
                },
                cause: Some(logging::cause_chain(&e)),
            },
        }
    }

    /// Answers `head` into `out` if the fast lane may ([`fast`]): a catalog route, a caller
    /// the instance authorizes, an entry the cache holds now. Counted and logged as
    /// [`Self::handle`] does. Returns whether the connection stays open after it, or `None`
    /// (nothing written, nothing counted) when the request is hyper's.
    pub(crate) fn answer_in_lane(&self, head: &fast::Head<'_>, out: &mut Vec<u8>) -> Option<bool> {
        let started = Instant::now();
        let (path, query) = head.path_and_query();
        let route = route::parse(&Method::GET, path, query).ok()?;
        let (key, shown) = reply::catalog_read(&route)?;
        if let Some(allowed) = &self.settings.auth_tokens {
            let token = head.authorization.and_then(respond::visible_str);
            if !token.is_some_and(|t| allowed.0.contains(t)) {
                return None;
            }
        }
        // Made before the lookup, so a miss (handed to hyper, which makes its own) skips a
        // number: ids stay unique, not consecutive.
        let made;
        let id = match head.request_id.filter(|given| is_request_id(given)) {
            Some(given) => given,
            None => {
                made = self.new_request_id();
                &made[..]
            }
        };
        let draining = self.is_draining();
        // Written while the entry is borrowed: a whole body kept as it is sent is copied out,
        // not cloned.
        let status = self.cache.hit_with(&key, |entry| {
            let reply = Reply::of(entry, &key, shown, head.gzip);
            let framing = fast::Framing {
                cors_origin: self.cors_origin.as_bytes(),
                request_id: id,
                draining,
                closing: !head.keep_alive,
            };
            fast::write_response(out, &reply, &framing);
            reply.status()
        })?;
        let elapsed = started.elapsed();
        let line = RequestLine {
            id: std::str::from_utf8(id).unwrap_or("-"),
            method: "GET",
            target: &head.target,
            is_readyz: false,
        };
        self.log(&line, status, elapsed, None);
        // Counted after the response is written: a panic while it is written hands the request
        // to hyper, which counts it (the cache's hit is counted only once the write is done).
        self.metrics.record(route.label_index(), status, elapsed);
        self.metrics.fast_lane_answered();
        Some(head.keep_alive && !draining)
    }

    /// Whether the instance is draining ([`Running::drain`]).
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Validates and makes a write, then re-renders what it made stale in this instance's
    /// cache before answering, so the caller reads its own write at once. A database failure
    /// comes back with its 503 or 500, for the log.
    async fn write(
        &self,
        route: &Route,
        request: WriteRequest<'_>,
        bytes: Result<Bytes, BodyError>,
        deadline: Instant,
    ) -> Result<Response<Body>, (Response<Body>, DbError)> {
        let WriteRequest {
            target,
            token,
            retry_key,
        } = request;
        let invalid: &'static str = match route {
            Route::PostReview => "Error: Review body contains invalid entries",
            Route::PostQuestion { .. } => "Error: Question body contains invalid entries",
            Route::PostAnswer { .. } => "Error: Answer body contains invalid entries",
            Route::PostCart => "Error: Cart body contains invalid entries",
            _ => "Error: Interaction body contains invalid entries",
        };
        let posted = matches!(
            route,
            Route::PostReview
                | Route::PostQuestion { .. }
                | Route::PostAnswer { .. }
                | Route::PostCart
                | Route::PostInteraction
        );
        let bytes = match bytes {
            Err(BodyError::TooLarge) => {
                return Ok(respond::text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                ))
            }
            Err(BodyError::TooSlow) => {
                return Ok(respond::text(
                    StatusCode::REQUEST_TIMEOUT,
                    "Request Timeout",
                ))
            }
            Err(_) => return Ok(respond::text(StatusCode::BAD_REQUEST, "Bad Request")),
            Ok(bytes) => bytes,
        };
        let pool = &self.db.primary;
        // The caller as its cart is stored under (never its token): its cart, and the scope
        // of its retry keys, so that two callers who happen to send one key never meet.
        let caller = if retry_key.is_some() || *route == Route::PostCart {
            self.settings.cart_keys.key(token)
        } else {
            String::new()
        };
        // A retry of a POST (the same key from the same caller with the same request) is
        // made once, and a vote's counts once for its row.
        let claim = retry_key
            .filter(|_| posted)
            .map(|key| write::post_claim(key, &[target.as_bytes(), caller.as_bytes(), &bytes]));
        let claim = claim.as_deref();
        let vote_key = retry_key
            .filter(|_| !posted)
            .map(|key| format!("{caller} {key}"));
        let vote_key = vote_key.as_deref();
        let result = match *route {
            Route::PostReview => match body::review(&bytes) {
                Ok(review) => write::add_review(pool, &review, claim).await,
                Err(_) => Err(WriteError::Invalid),
            },
            Route::PostQuestion { product_id } => match body::question(&bytes, product_id) {
                Ok(question) => write::add_question(pool, &question, claim).await,
                Err(_) => Err(WriteError::Invalid),
            },
            Route::PostAnswer { question_id } => match body::answer(&bytes) {
                Ok(answer) => write::add_answer(pool, question_id, &answer, claim).await,
                Err(_) => Err(WriteError::Invalid),
            },
            Route::PostCart => match body::cart_sku(&bytes) {
                Ok(sku) => write::add_to_cart(pool, &caller, sku, claim).await,
                Err(_) => Err(WriteError::Invalid),
            },
            Route::PostInteraction => match body::interaction(&bytes) {
                Ok(interaction) => write::add_interaction(pool, &interaction, claim).await,
                Err(_) => Err(WriteError::Invalid),
            },
            Route::MarkReview { id, mark } => write::mark_review(pool, id, mark, vote_key).await,
            Route::MarkQuestion { id, mark } => {
                write::mark_question(pool, id, mark, vote_key).await
            }
            Route::MarkAnswer { id, mark } => write::mark_answer(pool, id, mark, vote_key).await,
            _ => return Ok(respond::not_found()),
        };
        match result {
            Ok(written) => {
                if written.repeated {
                    self.metrics.post_repeated();
                }
                // The write is committed: its answer must not become the request timeout's
                // 503, which a client would retry into a second review. So the refresh gets
                // what is left of the request's time, less a margin to answer in, and at most
                // a quarter of it.
                let left = deadline.saturating_duration_since(Instant::now());
                let most = left
                    .saturating_sub(ANSWER_MARGIN)
                    .min(self.settings.limits.request_timeout / 4);
                self.cache
                    .apply_own_write(&written.changes, written.xid, &self.db, most)
                    .await;
                Ok(if posted {
                    respond::text(StatusCode::CREATED, "Created")
                } else {
                    respond::no_content()
                })
            }
            Err(WriteError::NotFound) => Ok(respond::not_found()),
            Err(WriteError::Invalid) => {
                Ok(respond::text(StatusCode::UNPROCESSABLE_ENTITY, invalid))
            }
            Err(WriteError::Db(e)) if e.is_unavailable() => Err((respond::unavailable(), e)),
            Err(WriteError::Db(e)) => Err((respond::internal_error(), e)),
        }
    }

    async fn read(
        &self,
        route: &Route,
        token: &str,
        gzip: bool,
    ) -> Result<Response<Body>, DbError> {
        let db = &self.db;
        if let Some((key, shown)) = reply::catalog_read(route) {
            // A hit is read where it lies, as the fast lane reads it: a clone of a catalog body
            // would copy its bytes.
            let answer =
                |entry: RenderedRef<'_>| Reply::of(entry, &key, shown, gzip).into_response();
            if let Some(response) = self.cache.hit_with(&key, answer) {
                return Ok(response);
            }
            let entry = self.cache.get(&key, db).await?;
            return Ok(answer(RenderedRef::from(&entry)));
        }
        let whole = |entry: Rendered| Reply::whole(&entry, gzip).into_response();
        Ok(match *route {
            Route::ProductsList { page, count } => {
                let empty = || respond::json(Bytes::from_static(b"[]"));
                // Past the last product a page is empty: no query, and no cache entry per
                // page a client invents. An offset past i64 is past every product.
                let Ok(offset) = i64::try_from(render::page_offset(page, count)) else {
                    return Ok(empty());
                };
                if offset > 0 && offset >= self.cache.products_total(db).await? {
                    return Ok(empty());
                }
                if count > self.settings.max_page_rows {
                    return self.products_in_runs(offset, count).await;
                }
                match i64::try_from(count) {
                    Ok(limit) => whole(
                        self.cache
                            .get(&self.cache.products_page_key(limit, offset), db)
                            .await?,
                    ),
                    Err(_) => empty(),
                }
            }
            Route::Cart => {
                let cart = Key::Cart(Arc::from(self.settings.cart_keys.key(token)));
                whole(self.cache.get(&cart, db).await?)
            }
            Route::Healthz => respond::text(StatusCode::OK, "ok"),
            Route::Readyz => self.readiness().await,
            Route::Metrics => {
                let gauges = Gauges {
                    cache: self.cache.stats(),
                    pool_size: self.db.primary.size(),
                    pool_open: self.db.primary.open_connections(),
                    replicas: self.db.replica_stats(),
                    primary_reads: self.db.primary_reads.load(Ordering::Relaxed),
                    connections_open: self.connections.open(),
                    connections_evicted: self.connections.evicted.load(Ordering::Relaxed),
                    connections_refused: self.connections.refused.load(Ordering::Relaxed),
                    feed: self.feed.get().cloned(),
                    warmup: Arc::clone(&self.warmup),
                    snapshots: Arc::clone(&self.snapshots),
                };
                let mut r = Response::new(Body::new(Bytes::from(self.metrics.render(&gauges))));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            Route::OpenApi => {
                let mut r = Response::new(Body::new(Bytes::from_static(OPENAPI_YAML.as_bytes())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                );
                r
            }
            // Writes are answered by `write`.
            _ => respond::not_found(),
        })
    }

    /// A `GET /products` page of more than `--max-page-rows` rows ("all", to clients that
    /// send huge counts), sent in runs of that many as they are read, so that a page of the
    /// whole catalog is never held: at most a few runs are (one being read, one waiting in
    /// the channel, one being written), and a client that stops reading stops the reads.
    /// Runs after the first continue after the last id sent, so none scans past rows already
    /// sent. The first run is read before the head is sent, within the request's time limit,
    /// so a database that cannot answer gets its 503 like any miss; a later failure cuts the
    /// body short (never a well-formed page) and is logged.
    async fn products_in_runs(&self, offset: i64, count: u64) -> Result<Response<Body>, DbError> {
        let run_rows = i64::try_from(self.settings.max_page_rows).unwrap_or(i64::MAX);
        let mut runs = ProductRuns::new(offset, count, run_rows);
        let mut page = Vec::from(&b"["[..]);
        let more = runs.next(&self.db, &mut page).await?;
        let runs_read = self.metrics.products_runs();
        runs_read.fetch_add(1, Ordering::Relaxed);
        if !more {
            page.push(b']');
            return Ok(respond::json(Bytes::from(page)));
        }
        let db = Arc::clone(&self.db);
        // One run waits in the channel at most.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut next = page;
            loop {
                if tx
                    .send(Ok(Bytes::from(std::mem::take(&mut next))))
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
                match runs.next(&db, &mut next).await {
                    Ok(more) => {
                        runs_read.fetch_add(1, Ordering::Relaxed);
                        if !more {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            cause = %logging::cause_chain(&e),
                            "a GET /products page sent in runs was cut short"
                        );
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            next.push(b']');
            let _ = tx.send(Ok(Bytes::from(next))).await;
        });
        Ok(respond::streamed_json(rx))
    }

    /// 200 only when the server can serve correctly now: warmed up, the change feed
    /// established in the log, connected (or down for less than the staleness bound) and not
    /// reading a backlog, and the database answering.
    async fn readiness(&self) -> Response<Body> {
        match self.unready_reason().await {
            None => respond::text(StatusCode::OK, "ready"),
            Some(reason) => respond::text(StatusCode::SERVICE_UNAVAILABLE, reason),
        }
    }

    /// Marks the instance as draining (see [`Running::drain`]): `/readyz` answers 503 from now.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Why the instance should not be sent requests now (what `/readyz` answers with its 503),
    /// or None when it is ready.
    pub async fn unready_reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Some("draining");
        }
        if !self.ready.load(Ordering::Acquire) && self.warm_up().await.is_err() {
            return Some("warming up");
        }
        // A restore runs before the feed starts: its progress is the news.
        let warming = self.settings.precompute == Precompute::All
            && !self.warmup.first_done.load(Ordering::Acquire);
        if warming && self.warmup.running.load(Ordering::Acquire) {
            return Some("warming up the catalog");
        }
        match self.feed.get() {
            None => return Some("change feed starting"),
            Some(feed) => {
                if let Some(reason) = feed.unready_reason(self.settings.feed_staleness) {
                    return Some(reason);
                }
            }
        }
        if warming {
            return Some("warming up the catalog");
        }
        let ping = self
            .db
            .primary
            .run(|c| async move { c.client.simple_query("SELECT 1").await })
            .await;
        ping.is_err().then_some("database unreachable")
    }
}

/// The request's own `X-Request-Id`, if it is one ([`is_request_id`]).
fn supplied_request_id(headers: &hyper::HeaderMap) -> Option<&HeaderValue> {
    headers
        .get(X_REQUEST_ID)
        .filter(|given| is_request_id(given.as_bytes()))
}

/// An `Idempotency-Key` that is not 1 to 128 visible ASCII characters, or that came twice.
struct BadRetryKey;

/// The request's `Idempotency-Key`, if it sent one.
fn retry_key(headers: &hyper::HeaderMap) -> Result<Option<String>, BadRetryKey> {
    let mut keys = headers.get_all(IDEMPOTENCY_KEY).iter();
    match (keys.next(), keys.next()) {
        (None, _) => Ok(None),
        (Some(key), None) if is_request_id(key.as_bytes()) => key
            .to_str()
            .map(|key| Some(key.to_owned()))
            .map_err(|_| BadRetryKey),
        _ => Err(BadRetryKey),
    }
}

/// Whether `Transfer-Encoding` names a coding besides `chunked` (`gzip, chunked`): one this
/// server does not undo. hyper refuses a request whose last coding is not `chunked` itself.
fn has_coding_besides_chunked(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"chunked"))
}

/// Whether a client's `X-Request-Id` is one to echo (or its `Idempotency-Key` one to keep): 1
/// to 128 visible ASCII characters.
fn is_request_id(given: &[u8]) -> bool {
    (1..=128).contains(&given.len()) && given.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// What a log line names of a request.
#[derive(Clone, Copy)]
struct RequestLine<'a> {
    id: &'a str,
    method: &'a str,
    target: &'a dyn std::fmt::Display,
    /// Whether it asked `/readyz` (whose 503 is an answer, not a failure).
    is_readyz: bool,
}

/// A tag that tells this instance's request ids from other instances': from the clock and the
/// process id, which differ between instances started on one host or several.
fn instance_tag() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = crate::dataset::rng::Rng::new(nanos ^ (u64::from(std::process::id()) << 32));
    (rng.unit() * f64::from(u32::MAX)) as u32
}

/// Answers a connection refused at the cap with the application's 503 and closes it: after
/// its write half, and after reading what the client sent (for up to a second), so that the
/// close does not reset the connection before the client has read the answer.
async fn refuse(app: Arc<App>, mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let id = app.request_id(&hyper::HeaderMap::new());
    let id = id.to_str().unwrap_or("-");
    if app.connections.should_log_refusal() {
        tracing::warn!(
            request_id = id,
            open = app.connections.open(),
            refused_so_far = app.connections.refused.load(Ordering::Relaxed),
            "connections refused: every one of --max-connections is busy (one line a second)"
        );
    }
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: 19\r\nretry-after: 1\r\naccess-control-allow-origin: {}\r\n\
         x-request-id: {id}\r\nconnection: close\r\n\r\nService Unavailable",
        app.cors_origin.to_str().unwrap_or("*")
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
    app.connections.refusal_answered();
}

/// Accepts connections until `shutdown` completes, then stops accepting, lets every open
/// connection finish the request it is serving (up to a time limit) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(cause = %e, "accept failed; pausing 50 ms");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = match app.connections.admit() {
                    Admission::Admitted(conn) => conn,
                    Admission::Refused => {
                        // Answered while few are; closed at once in a flood.
                        if app.connections.may_answer_refusal() {
                            tasks.spawn(refuse(Arc::clone(&app), stream));
                        }
                        continue;
                    }
                };
                let app = Arc::clone(&app);
                let mut stop = stop_rx.clone();
                tasks.spawn(async move {
                    let limits = &app.settings.limits;
                    let service = service_fn({
                        let app = Arc::clone(&app);
                        let conn = Arc::clone(&conn);
                        move |req: Request<Incoming>| {
                            let app = Arc::clone(&app);
                            let conn = Arc::clone(&conn);
                            async move {
                                let busy = app.connections.busy(&conn);
                                let response = app.handle(req).await;
                                Ok::<_, Infallible>(response.map(|body| body.keeping(busy)))
                            }
                        }
                    });
                    let stream = if app.settings.fast_lane {
                        match fast::serve(&app, &conn, stream, &mut stop).await {
                            fast::Ended::HandOff(rewound) => rewound,
                            fast::Ended::Closed => {
                                app.connections.closed(&conn);
                                return;
                            }
                        }
                    } else {
                        fast::Rewind::new(Vec::new(), stream)
                    };
                    let io = WriteDeadline::new(TokioIo::new(stream), limits.write_timeout)
                        .busy_while_stuck(app.connections.marker(&conn));
                    let served = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.header_timeout)
                        // hyper refuses less than 8 KiB (and panics).
                        .max_buf_size(limits.max_header_bytes.max(8192))
                        .max_headers(limits.max_headers)
                        .serve_connection(io, service);
                    tokio::pin!(served);
                    tokio::select! {
                        _ = served.as_mut() => {}
                        _ = stop.changed() => {
                            served.as_mut().graceful_shutdown();
                            let _ = served.await;
                        }
                        _ = conn.evict.notified() => {
                            // A request that began meanwhile (the eviction raced its arrival)
                            // is served first, within its own limits; an idle connection, or
                            // one still sending its head, is closed at once.
                            if conn.is_busy() {
                                served.as_mut().graceful_shutdown();
                                let grace = limits.request_timeout + limits.write_timeout;
                                let _ = tokio::time::timeout(grace, served).await;
                            }
                        }
                    }
                    app.connections.closed(&conn);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(app.settings.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    Ok(())
}

/// A server started by [`start`]: its address, its state, and a handle to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub app: Arc<App>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Drains the instance out of its balancer, then stops it: `/readyz` answers 503
    /// `draining` at once and every response says `Connection: close` (so clients and
    /// balancers reconnect, and find other instances once this one stops accepting), while
    /// requests are served as before for `delay` (longer than the balancer's health-check
    /// interval); then it stops as [`Running::stop`] does.
    pub async fn drain(self, delay: Duration) -> std::io::Result<()> {
        self.drain_unless(delay, std::future::pending()).await
    }

    /// [`Running::drain`], with the delay cut short once `hurry` resolves: the binary passes a
    /// second SIGINT or SIGTERM, so that an operator (or a demo's user) who does not want to
    /// wait for the balancer need not. Open requests still get the drain timeout.
    pub async fn drain_unless(
        self,
        delay: Duration,
        hurry: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.app.start_draining();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = hurry => {}
        }
        self.stop().await
    }

    /// Asks the server to stop accepting and waits until its connections have finished their
    /// requests (up to `drain_timeout`).
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// The background tasks of one instance: its change feed and its anti-entropy sweep. They
/// stop when [`BackgroundTasks::abort`] is called or the value is dropped.
pub struct BackgroundTasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BackgroundTasks {
    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A warm restart to try first: where the snapshot is, the products list's generation its
/// pages load into, and where the feed waits for the position to resume from.
struct Restore {
    settings: crate::config::SnapshotSettings,
    generation: u64,
    resume: tokio::sync::oneshot::Sender<Option<FeedPosition>>,
}

/// How long a restored instance waits for the refreshes of what changed since its snapshot
/// before it drops the bodies still waiting (their next reads fill them) and reports ready.
const RESTORE_REFRESH_LIMIT: Duration = Duration::from_secs(30);

/// Warms the catalog once the feed has found its place in the log (its start empties the
/// cache), and again whenever the feed empties the cache (a bulk load, a log pruned past it,
/// a restart); only the first warm-up holds `/readyz` at 503. With a snapshot to restore,
/// the first warm-up is the restore, and the feed resumes from the snapshot's position.
async fn keep_warm(
    app: &App,
    feed: &FeedStatus,
    database: &tokio_postgres::Config,
    restore: Option<Restore>,
) {
    if let Some(Restore {
        settings,
        generation,
        resume,
    }) = restore
    {
        let resets = feed.resets.load(Ordering::Acquire);
        let retention = app.settings.feed.retention;
        let restored = snapshot::restore(
            &app.cache,
            database,
            &settings,
            retention,
            generation,
            &app.warmup,
            &app.snapshots,
        )
        .await;
        let position = restored.unwrap_or_else(|e| {
            tracing::warn!(cause = %logging::cause_chain(&e), "warming the catalog from scratch");
            None
        });
        let resumed = position.is_some();
        if resumed {
            tokio::time::sleep(settings.pause_before_replay).await;
        }
        let _ = resume.send(position);
        if resumed {
            while !feed.is_established() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Unless the feed found the log no longer reaching back (and emptied the cache),
            // it has replayed what changed since the snapshot: current once those bodies are
            // refreshed, or dropped (a busy instance may keep refreshing for a while).
            let deadline = Instant::now() + RESTORE_REFRESH_LIMIT;
            while app.cache.refreshes_pending() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let dropped = app.cache.drop_bodies_being_refreshed();
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "bodies still being refreshed after a restore are dropped"
                );
            }
        }
        app.cache.end_restore();
        if resumed && feed.resets.load(Ordering::Acquire) == resets {
            app.warmup.first_done.store(true, Ordering::Release);
            while feed.resets.load(Ordering::Acquire) == resets {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // A scan from a replica that failed (a standby may cancel a long read that conflicts with
    // what it replays) is tried again on the primary.
    let mut replica_failed = false;
    loop {
        while !feed.is_established() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resets = feed.resets.load(Ordering::Acquire);
        // Warming begins before the source is chosen: a change from here on is refreshed over
        // whatever the scan reads, and the source has every change seen before.
        let generation = app.cache.begin_warmup();
        let source = app.db.scan_source(database, replica_failed).await;
        let warmed = warm::warm(
            &app.cache,
            &source.config,
            source.replayed_to(),
            &app.warmup,
            generation,
            app.settings.warmup_progress_period,
        )
        .await;
        replica_failed = source.finished(&warmed);
        match warmed {
            Ok(WarmupOutcome::Interrupted) => {
                tracing::info!(
                    "warm-up interrupted: everything changed (a bulk load); it starts over"
                );
                continue;
            }
            Ok(_) => app.warmup.first_done.store(true, Ordering::Release),
            Err(e) if e.is_lock_timeout() => {
                // A bulk load or a migration: expected, and retried until it is done.
                tracing::info!(cause = %logging::cause_chain(&e), "warm-up waits for a table another session holds; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(cause = %logging::cause_chain(&e), "warm-up failed; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        while feed.resets.load(Ordering::Acquire) == resets {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Writes a snapshot of the catalog every `period`.
async fn save_snapshots(app: &App, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        match app.save_snapshot().await {
            Ok(Some(written)) => tracing::info!(
                bodies = written.bodies,
                mb = written.bytes >> 20,
                left_out = written.left_out,
                "catalog snapshot written"
            ),
            Ok(None) => {}
            Err(SnapshotError::NotNow(why)) => tracing::info!(why, "no catalog snapshot now"),
            Err(e) => tracing::warn!(cause = %logging::cause_chain(&e), "catalog snapshot failed"),
        }
    }
}

/// The shared state of one instance, warmed up and with its change feed following (and its
/// sweep running, if configured): what either front end serves from.
pub async fn build_app(
    settings: ServeSettings,
    database: tokio_postgres::Config,
) -> (Arc<App>, BackgroundTasks) {
    let pool = Pool::new(database.clone(), settings.pool_size, settings.db_timeout);
    let db = Database::new(pool, &settings.replicas);
    let scan_database = settings.scan_database.clone().unwrap_or(database.clone());
    let feed_database = settings.feed_database.clone().unwrap_or(database);
    let app = Arc::new(App::new(settings, db));
    // A snapshot to restore: the feed waits for its position instead of starting at the end.
    if let Some(s) = &app.settings.snapshot {
        snapshot::remove_leftovers(&s.dir);
    }
    let (restore, feed_start) = match &app.settings.snapshot {
        Some(s)
            if app.settings.precompute == Precompute::All
                && s.dir.join(snapshot::FILE_NAME).exists() =>
        {
            let (resume, position) = tokio::sync::oneshot::channel();
            // Before the instance serves: a write it takes from here on is not overwritten by
            // the snapshot, and reads go to the database until the restore is current.
            let generation = app.cache.begin_restore();
            let restore = Restore {
                settings: s.clone(),
                generation,
                resume,
            };
            (Some(restore), FeedStart::Resume(position))
        }
        _ => (None, FeedStart::Fresh),
    };
    let resuming = restore.is_some();
    let refreshes = app.cache.refresh_queue();
    let refresher = {
        let app = Arc::clone(&app);
        let concurrency = app.settings.pool_size * 2;
        tokio::spawn(async move {
            crate::cache::refresh::run(&app.cache, &app.db, refreshes, concurrency).await
        })
    };
    let mut tasks = vec![refresher, app.start_feed(feed_database, feed_start)];
    tasks.extend(app.db.watch_replicas());
    // Carts stored under another form of key (before a cart secret was set, or by an older
    // build) move under this server's keys.
    let keys = &app.settings.cart_keys;
    let pattern = keys.final_keys_pattern();
    match write::rekey_carts(&app.db.primary, pattern, |stored| keys.rekeyed(stored)).await {
        Ok(0) => {}
        Ok(moved) => tracing::info!(moved, "carts moved under this server's cart keys"),
        Err(e) => tracing::warn!(
            cause = %logging::cause_chain(&e),
            "carts stored under older keys could not be moved; they stay out of reach until a \
             start succeeds"
        ),
    }
    if let Err(e) = app.warm_up().await {
        tracing::warn!(
            cause = %logging::cause_chain(&e),
            "warm-up failed; serving anyway, /readyz says 503 until the database answers"
        );
    }
    if let Some(feed) = app.feed_status() {
        // Start-up waits (as long as one feed query may take) for the feed to find its place in
        // the log, then serves anyway, with /readyz answering 503 until it has.
        // (A feed resuming from a snapshot waits for the restore instead.)
        let deadline = Instant::now() + app.settings.feed.query_timeout;
        while !resuming && !feed.is_established() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if app.settings.precompute == Precompute::All {
            let (warming, feed) = (Arc::clone(&app), Arc::clone(feed));
            // The restore is tried once: a warm-up started over after a panic scans.
            let restore = std::sync::Mutex::new(restore);
            tasks.push(supervised(
                "the catalog warm-up",
                Duration::from_secs(1),
                {
                    // A restore that panicked is not tried again: reads must stop going to the
                    // database once the scan that follows is done.
                    let cache = Arc::clone(&app.cache);
                    move || cache.end_restore()
                },
                move || {
                    let (app, feed, scan_database) = (
                        Arc::clone(&warming),
                        Arc::clone(&feed),
                        scan_database.clone(),
                    );
                    let restore = restore.lock().ok().and_then(|mut r| r.take());
                    async move { keep_warm(&app, &feed, &scan_database, restore).await }
                },
            ));
            if let Some(period) = app.settings.snapshot.as_ref().and_then(|s| s.period) {
                let app = Arc::clone(&app);
                tasks.push(supervised(
                    "the catalog snapshots",
                    Duration::from_secs(1),
                    || {},
                    move || {
                        let app = Arc::clone(&app);
                        async move { save_snapshots(&app, period).await }
                    },
                ));
            }
        }
        if let Some(period) = app.settings.sweep_period {
            let (app, feed) = (Arc::clone(&app), Arc::clone(feed));
            tasks.push(supervised(
                "the anti-entropy sweep",
                Duration::from_secs(1),
                || {},
                move || {
                    let (app, feed) = (Arc::clone(&app), Arc::clone(&feed));
                    let pace = crate::cache::sweep::SweepPace {
                        period,
                        max_per_second: app.settings.sweep_max_rate,
                    };
                    async move {
                        crate::cache::sweep::run(&app.cache, &app.db.primary, &feed, pace).await
                    }
                },
            ));
        }
    }
    (app, BackgroundTasks { tasks })
}

/// Binds `settings.listen`, warms up and serves in the background until stopped. The database
/// need not be up: the server starts anyway and reports it on `/readyz`.
pub async fn start(
    settings: ServeSettings,
    database: tokio_postgres::Config,
) -> std::io::Result<Running> {
    let listener = TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let (app, background) = build_app(settings, database).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app_for_task = Arc::clone(&app);
    let task = tokio::spawn(async move {
        let served = serve(listener, Arc::clone(&app_for_task), async {
            let _ = stopped.await;
        })
        .await;
        drop(background);
        served
    });
    Ok(Running {
        addr,
        app,
        stop,
        task,
    })
}
