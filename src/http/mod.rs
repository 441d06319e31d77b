//! The HTTP edge: the accept loop with graceful shutdown, and the request handler that turns a
//! [`Route`] into a response from the cache.

pub mod metrics;
pub mod respond;
pub mod route;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::metrics::{Gauges, Metrics};
use self::respond::Body;
use self::route::{Route, ROUTE_LABELS};
use crate::cache::{Key, ResponseCache};
use crate::config::ServeSettings;
use crate::pg::pool::Pool;
use crate::pg::DbError;
use crate::render::{self, Rendered};

/// Everything a request handler reads: shared by all connections of one instance.
pub struct App {
    pub cache: ResponseCache,
    pub pool: Pool,
    pub metrics: Metrics,
    pub settings: ServeSettings,
    cors_origin: HeaderValue,
    ready: AtomicBool,
}

impl App {
    pub fn new(settings: ServeSettings, pool: Pool) -> App {
        let cors_origin =
            HeaderValue::from_str(&settings.cors_origin).unwrap_or(HeaderValue::from_static("*"));
        App {
            cache: ResponseCache::new(settings.cache_bytes),
            pool,
            metrics: Metrics::default(),
            settings,
            cors_origin,
            ready: AtomicBool::new(false),
        }
    }

    /// Opens the pool's first connection; `/readyz` answers 503 until this has succeeded.
    pub async fn warm_up(&self) -> Result<(), DbError> {
        self.pool.get().await?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Answers one request. Never fails: every error is a response. Generic over the body so
    /// benches and tests can call it without a socket.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        let started = Instant::now();
        let (label, mut response) = self.respond(&req).await;
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.cors_origin.clone(),
        );
        self.metrics
            .record(label, response.status().as_u16(), started.elapsed());
        response
    }

    async fn respond<B>(&self, req: &Request<B>) -> (usize, Response<Body>) {
        let unmatched = ROUTE_LABELS.len() - 1;
        if req.method() == Method::OPTIONS {
            return (unmatched, respond::preflight());
        }
        let route = match route::parse(req.method(), req.uri().path(), req.uri().query()) {
            Ok(route) => route,
            Err(e) => return (unmatched, respond::route_error(&e)),
        };
        let label = route.label_index();
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(allowed) = &self.settings.auth_tokens {
            let operational = matches!(route, Route::Healthz | Route::Readyz | Route::Metrics);
            if !operational && !token.is_some_and(|t| allowed.contains(t)) {
                return (
                    label,
                    respond::text(StatusCode::UNAUTHORIZED, "Unauthorized"),
                );
            }
        }
        let response = match self.read(&route, token.unwrap_or("")).await {
            Ok(r) => r,
            Err(e) if e.is_unavailable() => respond::unavailable(),
            Err(_) => respond::internal_error(),
        };
        (label, response)
    }

    async fn read(&self, route: &Route, session: &str) -> Result<Response<Body>, DbError> {
        let pool = &self.pool;
        let whole = |entry: Rendered| match entry {
            Rendered::Json(body) => respond::json(body),
            _ => respond::not_found(),
        };
        Ok(match *route {
            Route::ProductsList { page, count } => {
                let limit = count.min(self.settings.max_page_rows);
                let offset = u128::from(page - 1) * u128::from(count);
                match (i64::try_from(limit), i64::try_from(offset)) {
                    (Ok(limit), Ok(offset)) => whole(
                        self.cache
                            .get(&Key::ProductsPage { limit, offset }, pool)
                            .await?,
                    ),
                    _ => respond::json(Bytes::from_static(b"[]")),
                }
            }
            Route::Product(id) => whole(self.cache.get(&Key::Product(id), pool).await?),
            Route::Styles(id) => whole(self.cache.get(&Key::Styles(id), pool).await?),
            Route::Related(id) => whole(self.cache.get(&Key::Related(id), pool).await?),
            Route::Reviews {
                product_id,
                page,
                count,
                order,
            } => {
                match self
                    .cache
                    .get(&Key::Reviews { product_id, order }, pool)
                    .await?
                {
                    Rendered::List(list) => respond::json(render::reviews::reviews_page(
                        product_id, page, count, &list,
                    )),
                    _ => respond::internal_error(),
                }
            }
            Route::ReviewsMeta { product_id } => {
                whole(self.cache.get(&Key::ReviewsMeta(product_id), pool).await?)
            }
            Route::Questions {
                product_id,
                page,
                count,
            } => match self.cache.get(&Key::Questions(product_id), pool).await? {
                Rendered::List(list) => {
                    respond::json(render::qa::questions_page(product_id, page, count, &list))
                }
                _ => respond::internal_error(),
            },
            Route::Answers {
                question_id,
                page,
                count,
            } => match self.cache.get(&Key::Answers(question_id), pool).await? {
                Rendered::List(list) => {
                    respond::json(render::qa::answers_page(question_id, page, count, &list))
                }
                _ => respond::not_found(),
            },
            Route::Cart => whole(self.cache.get(&Key::Cart(Arc::from(session)), pool).await?),
            Route::Healthz => respond::text(StatusCode::OK, "ok"),
            Route::Readyz => self.readiness().await,
            Route::Metrics => {
                let gauges = Gauges {
                    cache: self.cache.stats(),
                    pool_size: self.pool.size(),
                    pool_open: self.pool.open_connections(),
                };
                let mut r = Response::new(Body::new(Bytes::from(self.metrics.render(&gauges))));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            Route::PostReview
            | Route::MarkReview { .. }
            | Route::PostQuestion
            | Route::MarkQuestion { .. }
            | Route::PostAnswer { .. }
            | Route::MarkAnswer { .. }
            | Route::PostCart
            | Route::PostInteraction => {
                respond::text(StatusCode::NOT_IMPLEMENTED, "Not Implemented")
            }
        })
    }

    /// 200 only when the server can serve correctly now: warmed up and the database answering.
    async fn readiness(&self) -> Response<Body> {
        if !self.ready.load(Ordering::Acquire) && self.warm_up().await.is_err() {
            return respond::text(StatusCode::SERVICE_UNAVAILABLE, "warming up");
        }
        let ping = self
            .pool
            .run(|c| async move { c.client.simple_query("SELECT 1").await })
            .await;
        match ping {
            Ok(_) => respond::text(StatusCode::OK, "ready"),
            Err(_) => respond::text(StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
        }
    }
}

/// How long open connections get to finish their requests after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` completes, then stops accepting, lets every open
/// connection finish the request it is serving (up to a time limit) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        eprintln!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let app = Arc::clone(&app);
                        async move { Ok::<_, Infallible>(app.handle(req).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
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
    /// Asks the server to stop and waits until its connections have drained.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Binds `settings.listen`, warms up and serves in the background until stopped. The database
/// need not be up: the server starts anyway and reports it on `/readyz`.
pub async fn start(
    settings: ServeSettings,
    database: tokio_postgres::Config,
) -> std::io::Result<Running> {
    let listener = TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let pool = Pool::new(database, settings.pool_size, settings.db_timeout);
    let app = Arc::new(App::new(settings, pool));
    if let Err(e) = app.warm_up().await {
        eprintln!("warm-up: {e} (serving anyway; /readyz says 503 until the database answers)");
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, Arc::clone(&app), async {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        app,
        stop,
        task,
    })
}
