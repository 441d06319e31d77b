//! The `atelier` command line: migrate, generate, load, demo.

/// Millions of small bodies are allocated and freed while the catalog warms up: mimalloc
/// takes a quarter off a full-scale warm-up against glibc's malloc (docs/benchmarks.md,
/// Warm-up).
#[cfg(not(feature = "alloc-census"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The same allocator, with live allocations counted by size and logged (docs/benchmarks.md,
/// Warm-up).
#[cfg(feature = "alloc-census")]
#[global_allocator]
static ALLOCATOR: alloc_census::Counted = alloc_census::Counted;

#[cfg(feature = "alloc-census")]
mod alloc_census;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use atelier::config::ServeSettings;
use atelier::dataset::generate::{generate, GenerateOptions};
use atelier::dataset::manifest::Manifest;
use atelier::logging::LogFormat;
use atelier::pg::cluster::{ClusterOptions, PrivateCluster};
use atelier::pg::load::{load, LoadOptions};
use atelier::pg::{self, migrate::migrate};

#[derive(Parser)]
#[command(
    name = "atelier",
    version,
    about = "Edge server for the Atelier storefront API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// What to log: a level (error, warn, info, debug, trace), or target=level pairs such as
    /// `warn,atelier=debug`.
    #[arg(long, global = true, env = "ATELIER_LOG", default_value = "info")]
    log: String,
    /// How log lines look: `human`, `json` (one object a line, for journald and log shippers),
    /// or `auto` (human on a terminal, JSON otherwise).
    #[arg(long, global = true, env = "ATELIER_LOG_FORMAT", default_value = "auto",
          value_parser = ["auto", "human", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the schema migrations in sql/ that the database does not have yet.
    Migrate(DatabaseArgs),
    /// Write a synthetic data set in the original CSV format.
    Generate(GenerateArgs),
    /// Bulk-load a data set directory into the database (migrating it first).
    Load(LoadArgs),
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Start a private PostgreSQL, generate a small data set, load it and serve it.
    Demo(DemoArgs),
    /// Sharded catalogs: the shard map, in one place.
    #[command(subcommand)]
    Shards(ShardsCommand),
}

#[derive(Subcommand)]
enum ShardsCommand {
    /// Print the nginx configuration that routes each request to the shard holding it.
    Nginx(ShardsArgs),
}

#[derive(Args)]
struct ShardsArgs {
    /// Where nginx listens (an nginx `listen` value).
    #[arg(long, default_value = "80")]
    listen: String,
    /// The instances of each shard, in shard order: one argument per shard, its instances'
    /// host:port separated by commas (two or more, for failover). Start each instance of the
    /// i-th with `--shard i/N`.
    #[arg(required = true, value_name = "INSTANCES")]
    shards: Vec<String>,
}

#[derive(Args)]
struct DatabaseArgs {
    /// PostgreSQL connection string (URL or key=value form).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Print only errors and the final summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Size relative to the original data set: 1.0 is 1M products and about 70M rows.
    #[arg(long, default_value_t = 0.01)]
    scale: f64,
    /// Seed of the random generator; the same seed and scale give the same files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Directory to write the CSV files and manifest.tsv into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Print only errors and the final summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct LoadArgs {
    /// Directory holding the data set's CSV files (product.csv, styles.csv, ...).
    dir: PathBuf,
    /// Delete the data the database holds instead of refusing to load.
    #[arg(long)]
    replace: bool,
    /// Connections used to build indexes and constraints after the copy.
    #[arg(long, default_value_t = 2,
          value_parser = usize_in(1..=32))]
    jobs: usize,
    /// How many dropped lines (well-formed rows whose parent is missing) to list per file.
    /// Every repaired or skipped line is listed.
    #[arg(long, default_value_t = 20)]
    show_lines: usize,
    #[command(flatten)]
    db: DatabaseArgs,
}

#[derive(Args)]
struct HttpArgs {
    /// Address to listen on.
    #[arg(long, env = "ATELIER_LISTEN", default_value = "127.0.0.1:3000")]
    listen: std::net::SocketAddr,
    /// Lock the process's memory in RAM as it is touched (mlockall, on fault): the catalog is
    /// never swapped out, and on the benchmark machine, whose host reclaims cold pages, the
    /// fixed-rate p99 halved. Needs CAP_IPC_LOCK or an unlimited memlock limit (systemd:
    /// LimitMEMLOCK=infinity).
    #[arg(long, env = "ATELIER_LOCK_MEMORY")]
    lock_memory: bool,
    /// Connections in the database pool for cache fills and writes.
    #[arg(long, env = "ATELIER_POOL_SIZE", default_value_t = 8,
          value_parser = usize_in(1..=1000))]
    pool_size: usize,
    /// Time limit for connecting to the database and for each query, in milliseconds;
    /// past it a request answers 503.
    #[arg(long, env = "ATELIER_DB_TIMEOUT_MS", default_value_t = 1000, value_parser = time_limit_ms())]
    db_timeout_ms: u64,
    /// The response cache's budget in MiB (bodies and keys).
    #[arg(long, env = "ATELIER_CACHE_MB", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(0..=16 << 20))]
    cache_mb: u64,
    /// Access-Control-Allow-Origin sent with every response.
    #[arg(long, env = "ATELIER_CORS_ORIGIN", default_value = "*")]
    cors_origin: String,
    /// Most rows of a GET /products page cached whole; a larger page is sent in runs of this many.
    /// At least 5: the default page (`count=5`) is always cached whole.
    #[arg(long, env = "ATELIER_MAX_PAGE_ROWS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(5..=1_000_000))]
    max_page_rows: u64,
    /// Comma-separated Authorization tokens to accept; when set, others get 401.
    #[arg(long, env = "ATELIER_AUTH_TOKENS", hide_env_values = true)]
    auth_tokens: Option<String>,
    /// Secret (at least 16 bytes; `openssl rand -hex 32`) that carts are keyed with: a cart is
    /// stored under an HMAC of the caller's Authorization value, not the value. Without it, a
    /// plain SHA-256. Every instance needs the same one; changing it loses every cart.
    #[arg(long, env = "ATELIER_CART_SECRET", hide_env_values = true)]
    cart_secret: Option<String>,
    /// Largest request body accepted, in bytes (413 past it).
    #[arg(long, env = "ATELIER_BODY_LIMIT", default_value_t = 64 * 1024,
          value_parser = usize_in(1024..=64 << 20))]
    body_limit: usize,
    /// HTTP front end: `fast` (the default: the catalog's hits answered on the socket, every
    /// other request by hyper), `hyper` (every request by hyper), or `may` (may_minihttp;
    /// needs a build with `--features may-server`). docs/benchmarks.md says how they measured.
    #[arg(long, env = "ATELIER_ENGINE", default_value = "fast", value_parser = ["fast", "hyper", "may"])]
    engine: String,
    /// Seconds the change feed may be down before /readyz answers 503.
    #[arg(long, env = "ATELIER_FEED_STALENESS_S", default_value_t = 5)]
    feed_staleness_s: u64,
    /// Hours of change_log kept (1 to 8760; the database keeps at least
    /// change_log_pruned.min_retention_s, an hour unless its owner lowers it); an instance away
    /// longer empties its cache on reconnect.
    #[arg(long, env = "ATELIER_FEED_RETENTION_H", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=8760))]
    feed_retention_h: u64,
    /// Where the change feed connects, if not DATABASE_URL (for example when the pool goes
    /// through a transaction-pooling proxy, which cannot LISTEN).
    #[arg(long, env = "ATELIER_FEED_DATABASE_URL", hide_env_values = true)]
    feed_database_url: Option<String>,
    /// A streaming replica of DATABASE_URL for warm-ups, refreshes and fills (repeat the
    /// flag for more; in the environment, separate them with `;`). Writes, the change feed and
    /// /readyz stay on the primary; a replica that lacks a change this instance has seen is
    /// not read until it has replayed it.
    #[arg(
        long = "replica-url",
        env = "ATELIER_REPLICA_URLS",
        value_delimiter = ';',
        hide_env_values = true
    )]
    replica_urls: Vec<String>,
    /// Milliseconds a replica may lack a change seen (waited for) before reads skip it for the
    /// primary (1 to 10,000).
    #[arg(long, env = "ATELIER_REPLICA_MAX_LAG_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    replica_max_lag_ms: u64,
    /// Milliseconds the refreshes after an instance's own write wait for a replica to replay
    /// it before reading the primary (0: they read the primary; at most 1,000).
    #[arg(long, env = "ATELIER_REPLICA_WRITE_WAIT_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=1_000))]
    replica_write_wait_ms: u64,
    /// Seconds within which the anti-entropy sweep re-renders every cached entry and counts
    /// those that drifted (0: off).
    #[arg(long, env = "ATELIER_SWEEP_PERIOD_S", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    sweep_period_s: u64,
    /// The most entries the sweep re-renders a second, whatever the period asks (each costs
    /// the database about 140 µs of CPU); past it a round takes longer than the period.
    #[arg(long, env = "ATELIER_SWEEP_MAX_RATE", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sweep_max_rate: u32,
    /// What to render into the cache before reporting ready: `all` (the whole catalog, as far
    /// as --cache-mb holds it) or `none` (every body on its first request).
    #[arg(long, env = "ATELIER_PRECOMPUTE", default_value = "all", value_parser = ["all", "none"])]
    precompute: String,
    /// Precompute only shard I of N of the catalog (`I/N`): the products, and the questions'
    /// answers, whose ids nginx routes to this instance (`atelier shards`); the rest is served
    /// on demand.
    #[arg(long, env = "ATELIER_SHARD")]
    shard: Option<atelier::shard::Shard>,
    /// How far the precomputed catalog compacts its bodies: `all` (whole bodies kept gzip,
    /// sent as they are to clients that take gzip; list buffers kept packed, unpacked for
    /// each page), `dense` (whole bodies packed against a dictionary too once one is trained,
    /// unpacked for every request and sent plain: the least memory), `bodies` (lists kept
    /// plain: more memory, faster list pages) or `none`
    #[arg(long, env = "ATELIER_COMPRESS", default_value = "all", value_parser = ["all", "dense", "bodies", "none"])]
    compress: String,
    /// Kilobytes of lists (and with `--compress dense`, of whole bodies) a warm-up samples to
    /// train a dictionary on, which everything of that kind packed after it is compressed
    /// against (a question's answers 40% smaller than deflated at full scale; what comes
    /// before it is deflated, or kept gzip, as is all of a catalog smaller than the sample);
    /// 0: this instance trains none (one restored with its snapshot is still used)
    #[arg(long, env = "ATELIER_DICTIONARY_SAMPLE_KB", default_value_t = 4096)]
    dictionary_sample_kb: usize,
    /// Most connections open at once; at the cap a new one closes the connection idle longest
    /// (503 when every one is busy).
    #[arg(long, env = "ATELIER_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = usize_in(1..=10_000_000))]
    max_connections: usize,
    /// Milliseconds a client may take to send a request's headers, and may stay idle between
    /// requests on one connection.
    #[arg(long, env = "ATELIER_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = time_limit_ms())]
    header_timeout_ms: u64,
    /// Milliseconds a request body may take to arrive (408 past it).
    #[arg(long, env = "ATELIER_BODY_TIMEOUT_MS", default_value_t = 10_000, value_parser = time_limit_ms())]
    body_timeout_ms: u64,
    /// Milliseconds from a request's headers to its answer, body included (503 past it).
    #[arg(long, env = "ATELIER_REQUEST_TIMEOUT_MS", default_value_t = 20_000, value_parser = time_limit_ms())]
    request_timeout_ms: u64,
    /// Milliseconds a client may keep a response waiting (from the first write its socket
    /// could not take until the response is out) before the connection is closed.
    #[arg(long, env = "ATELIER_WRITE_TIMEOUT_MS", default_value_t = 10_000, value_parser = time_limit_ms())]
    write_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes, at least 8192 (431 past it).
    #[arg(long, env = "ATELIER_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u64).range(8192..))]
    max_header_bytes: u64,
    /// Most header fields in one request (431 past it).
    #[arg(long, env = "ATELIER_MAX_HEADERS", default_value_t = 64,
          value_parser = usize_in(8..=1000))]
    max_headers: usize,
    /// Requests at least this slow, in milliseconds, get a log line.
    #[arg(long, env = "ATELIER_SLOW_REQUEST_MS", default_value_t = 1000)]
    slow_request_ms: u64,
    /// Milliseconds a stopping instance keeps serving, with /readyz at 503, before it stops
    /// accepting: longer than the load balancer's health-check interval (times its unhealthy
    /// threshold).
    #[arg(long, env = "ATELIER_DRAIN_DELAY_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    drain_delay_ms: u64,
    /// Milliseconds open requests get to finish once accepting has stopped.
    #[arg(long, env = "ATELIER_DRAIN_TIMEOUT_MS", default_value_t = 10_000, value_parser = time_limit_ms())]
    drain_timeout_ms: u64,
    /// Directory for catalog snapshots: written every --snapshot-period-s and at shutdown,
    /// loaded at start for a warm restart (unset: no snapshots).
    #[arg(long, env = "ATELIER_SNAPSHOT_DIR")]
    snapshot_dir: Option<std::path::PathBuf>,
    /// Seconds between catalog snapshots (0: only at shutdown).
    #[arg(long, env = "ATELIER_SNAPSHOT_PERIOD_S", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    snapshot_period_s: u64,
    /// Log one request in this many (0: no access log; 1: every request).
    #[arg(long, env = "ATELIER_ACCESS_LOG_SAMPLE", default_value_t = 0)]
    access_log_sample: u64,
}

impl HttpArgs {
    fn settings(&self) -> anyhow::Result<ServeSettings> {
        let feed_database = given(self.feed_database_url.as_deref())
            .map(|url| parse_url_as("--feed-database-url", url))
            .transpose()?;
        let replicas = self
            .replica_urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(|url| {
                let config = parse_url_as("--replica-url", url)?;
                // The watcher must ask the very server the reads go to.
                anyhow::ensure!(
                    config.get_hosts().len() <= 1,
                    "--replica-url names several hosts ({}): give each standby a --replica-url \
                     of its own, never a pool or balancer in front of several",
                    atelier::pg::describe(&config)
                );
                Ok(config)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ServeSettings {
            listen: self.listen,
            pool_size: self.pool_size,
            db_timeout: std::time::Duration::from_millis(self.db_timeout_ms),
            cache_bytes: self.cache_mb << 20,
            cors_origin: self.cors_origin.clone(),
            max_page_rows: self.max_page_rows,
            cart_keys: atelier::cart_key::CartKeys::new(
                self.cart_secret.as_deref().map(str::as_bytes),
            )?,
            auth_tokens: self.auth_tokens.as_ref().map(|t| {
                atelier::config::Secret(
                    t.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }),
            body_limit: self.body_limit,
            feed_staleness: std::time::Duration::from_secs(self.feed_staleness_s),
            feed: atelier::pg::feed::FeedSettings {
                retention: std::time::Duration::from_secs(self.feed_retention_h * 3600),
                ..Default::default()
            },
            feed_database,
            sweep_period: (self.sweep_period_s > 0)
                .then(|| std::time::Duration::from_secs(self.sweep_period_s)),
            compaction: match self.compress.as_str() {
                "none" => atelier::render::Compaction::None,
                "bodies" => atelier::render::Compaction::Bodies,
                "dense" => atelier::render::Compaction::Dense,
                _ => atelier::render::Compaction::All,
            },
            dictionary_sample_bytes: self.dictionary_sample_kb.saturating_mul(1024),
            warmup_progress_period: atelier::config::WARMUP_PROGRESS_PERIOD,
            sweep_max_rate: self.sweep_max_rate,
            precompute: if self.precompute == "none" {
                atelier::config::Precompute::None
            } else {
                atelier::config::Precompute::All
            },
            scan_database: None,
            replicas: atelier::pg::database::ReplicaSettings {
                replicas,
                max_lag: ms(self.replica_max_lag_ms),
                write_wait: ms(self.replica_write_wait_ms),
            },
            slow_request: ms(self.slow_request_ms),
            drain_delay: ms(self.drain_delay_ms),
            drain_timeout: ms(self.drain_timeout_ms),
            shard: self.shard,
            snapshot: self
                .snapshot_dir
                .clone()
                .map(|dir| atelier::config::SnapshotSettings {
                    dir,
                    period: (self.snapshot_period_s > 0)
                        .then(|| std::time::Duration::from_secs(self.snapshot_period_s)),
                    ..Default::default()
                }),
            access_log_sample: self.access_log_sample,
            fast_lane: self.engine == "fast",
            limits: atelier::config::Limits {
                max_connections: self.max_connections,
                header_timeout: ms(self.header_timeout_ms),
                body_timeout: ms(self.body_timeout_ms),
                request_timeout: ms(self.request_timeout_ms),
                write_timeout: ms(self.write_timeout_ms),
                max_header_bytes: usize::try_from(self.max_header_bytes)?,
                max_headers: self.max_headers,
            },
        })
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    db: DatabaseArgs,
}

#[derive(Args)]
struct DemoArgs {
    /// Size of the generated demo data set (0.01 is 10,000 products).
    #[arg(long, default_value_t = 0.01)]
    scale: f64,
    /// Seed of the generated data set.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Load this data set directory instead of generating one.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stop after loading instead of serving (needs DATABASE_URL: a private cluster goes when
    /// the demo ends).
    #[arg(long)]
    no_serve: bool,
    /// Delete the data DATABASE_URL's database holds and load the demo's instead (without it,
    /// a database that holds data is refused).
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    db: DatabaseArgs,
}

/// A count whose flag accepts only `range`.
fn usize_in(range: std::ops::RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(range)
}

/// A time limit in milliseconds: at least 1, at most a day (a larger one would overflow the
/// clocks it is added to).
fn time_limit_ms() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(1..=86_400_000)
}

/// A duration given in milliseconds on the command line.
fn ms(millis: u64) -> std::time::Duration {
    std::time::Duration::from_millis(millis)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let format = match cli.log_format.as_str() {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        _ => LogFormat::Auto,
    };
    atelier::logging::init(format, &cli.log)?;
    #[cfg(feature = "alloc-census")]
    alloc_census::log_periodically();
    // A panic (a bug) is logged like any other failure, as one line in the log's format.
    std::panic::set_hook(Box::new(|panic| {
        let location = panic.location().map(|l| l.to_string()).unwrap_or_default();
        let message = atelier::logging::panic_message(panic.payload());
        tracing::error!(location, message, "panicked");
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Migrate(db) => {
            let config = database_config(&db)?;
            let mut client = pg::connect(&config).await?;
            let applied = migrate(&mut client).await?;
            pg::load::finish_interrupted_load(&config, db.quiet).await?;
            eprintln!(
                "{applied} migration(s) applied to {}",
                pg::describe(&config)
            );
        }
        Command::Generate(args) => {
            let manifest = generate(&GenerateOptions {
                scale: args.scale,
                seed: args.seed,
                out: args.out.clone(),
                quiet: args.quiet,
            })?;
            print!("{}", manifest.to_tsv());
        }
        Command::Load(args) => {
            let config = database_config(&args.db)?;
            let report = load(
                &config,
                &LoadOptions {
                    dir: args.dir,
                    replace: args.replace,
                    jobs: args.jobs,
                    quiet: args.db.quiet,
                },
            )
            .await?;
            print!("{}", report.render(args.show_lines));
        }
        Command::Serve(args) => {
            if args.http.lock_memory {
                lock_memory()?;
            }
            let config = database_config(&args.db)?;
            let settings = args.http.settings()?;
            serve(&args.http, settings, config, false).await?;
        }
        Command::Demo(args) => {
            // Before the demo's cluster, data and load, so that a refusal costs nothing.
            if args.http.lock_memory {
                lock_memory()?;
            }
            demo(args).await?
        }
        Command::Shards(ShardsCommand::Nginx(args)) => {
            let shards: Vec<Vec<String>> = args
                .shards
                .iter()
                .map(|s| s.split(',').map(|i| i.trim().to_owned()).collect())
                .collect();
            let most = atelier::shard::MAX_SHARDS as usize;
            anyhow::ensure!(
                shards.len() <= most && shards.iter().flatten().all(|i| !i.is_empty()),
                "give 1 to {most} shards, each a comma-separated list of host:port"
            );
            print!("{}", atelier::shard::nginx_config(&shards, &args.listen));
        }
    }
    Ok(())
}

impl DatabaseArgs {
    /// The connection string given, if any: an empty `DATABASE_URL` (as `DATABASE_URL=` in a
    /// shell leaves it) is none, not a connection to whatever libpq's defaults name.
    fn url(&self) -> Option<&str> {
        given(self.database_url.as_deref())
    }
}

/// A connection string as given, if it is one: an empty value (`VAR=` in a shell) is none.
fn given(url: Option<&str>) -> Option<&str> {
    url.filter(|url| !url.trim().is_empty())
}

/// The database named by `--database-url`/`DATABASE_URL`, which these commands require.
fn database_config(db: &DatabaseArgs) -> Result<tokio_postgres::Config> {
    let url = db.url().context(
        "no database given: set DATABASE_URL (or pass --database-url), e.g. DATABASE_URL=postgres://user@localhost/atelier; `atelier demo` starts a private PostgreSQL instead",
    )?;
    parse_database_url(url)
}

/// `url`, given as `DATABASE_URL` or `--database-url`, as a connection configuration.
fn parse_database_url(url: &str) -> Result<tokio_postgres::Config> {
    parse_url_as("DATABASE_URL (or --database-url)", url)
}

/// `url` as a connection configuration; an error names `given_as`, where the URL came from.
fn parse_url_as(given_as: &str, url: &str) -> Result<tokio_postgres::Config> {
    pg::parse_url(url).map_err(|e| anyhow::anyhow!("{given_as}: {e}"))
}

async fn demo(args: DemoArgs) -> Result<()> {
    // Refused before the cluster, the data and the load, so that a refusal costs nothing.
    let settings = args.http.settings()?;
    anyhow::ensure!(
        !args.no_serve || args.db.url().is_some(),
        "--no-serve needs DATABASE_URL: without it the demo's private PostgreSQL, and the data \
         loaded into it, are deleted when the demo ends"
    );
    let mut cluster = None;
    let config = match args.db.url() {
        Some(url) => parse_database_url(url)?,
        None => {
            eprintln!("DATABASE_URL is not set: starting a private PostgreSQL cluster");
            let started = PrivateCluster::start(&ClusterOptions::default())?;
            let admin = pg::connect(&started.config("postgres")).await?;
            admin
                .batch_execute("CREATE DATABASE atelier")
                .await
                .context("creating the demo database")?;
            eprintln!(
                "private cluster ready: DATABASE_URL='{}'",
                started.url("atelier")
            );
            let config = started.config("atelier");
            cluster = Some(started);
            config
        }
    };
    let dir = match args.data {
        Some(dir) => dir,
        None => {
            let dir = std::env::temp_dir()
                .join(format!("atelier-demo-data-{}-{}", args.scale, args.seed));
            if Manifest::read(&dir).is_err() {
                // Generated beside it and renamed into place whole: a demo started meanwhile
                // (or one interrupted half-way) never finds a partial set under the name.
                remove_abandoned_partials(&dir);
                let fresh = partial_dir(&dir, std::process::id());
                let generated = generate(&GenerateOptions {
                    scale: args.scale,
                    seed: args.seed,
                    out: fresh.clone(),
                    quiet: args.db.quiet,
                });
                if let Err(e) = generated {
                    let _ = std::fs::remove_dir_all(&fresh);
                    return Err(e.into());
                }
                if std::fs::rename(&fresh, &dir).is_err() {
                    // Another demo put its set there first (the same seed and scale give the
                    // same files), or a broken one is in the way.
                    if Manifest::read(&dir).is_err() {
                        std::fs::remove_dir_all(&dir).with_context(|| {
                            format!("removing the incomplete data set in {}", dir.display())
                        })?;
                        std::fs::rename(&fresh, &dir).with_context(|| {
                            format!("moving the generated data set to {}", dir.display())
                        })?;
                    } else {
                        let _ = std::fs::remove_dir_all(&fresh);
                    }
                }
            } else {
                eprintln!("using the data set generated earlier in {}", dir.display());
            }
            dir
        }
    };
    let report = load(
        &config,
        &LoadOptions {
            dir,
            replace: args.replace,
            jobs: 2,
            quiet: args.db.quiet,
        },
    )
    .await?;
    print!("{}", report.render(5));
    eprintln!("demo data loaded into {}", pg::describe(&config));
    if !args.no_serve {
        serve(&args.http, settings, config, true).await?;
    }
    if let Some(mut cluster) = cluster {
        cluster.stop();
    }
    Ok(())
}

/// Removes the partial data sets that demos generating `dir` left when they were interrupted
/// (`DIR.PID.partial`, whose process is gone).
fn remove_abandoned_partials(dir: &std::path::Path) {
    let Some(parent) = dir.parent() else {
        return;
    };
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let path = entry.path();
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let pid = entry_name
            .strip_suffix(".partial")
            .and_then(|rest| rest.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .filter(|&pid| path == partial_dir(dir, pid));
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Where process `pid` generates the data set bound for `dir`: `DIR.PID.partial`.
fn partial_dir(dir: &std::path::Path, pid: u32) -> std::path::PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".{pid}.partial"));
    std::path::PathBuf::from(name)
}

/// Refuses to serve a database that lacks a migration this build carries (its statements may
/// need what the migration adds). A database that cannot be reached now is not refused: the
/// server starts, and answers 503 until it can.
async fn refuse_an_unmigrated_database(
    database: &tokio_postgres::Config,
    limit: std::time::Duration,
) -> Result<()> {
    let Ok(Ok(client)) = tokio::time::timeout(limit, pg::connect(database)).await else {
        return Ok(());
    };
    // Refused only when the database is known to be behind: a role that may not read the
    // schema's version (or a slow answer) leaves it to the operator, as before this check.
    let behind = match tokio::time::timeout(limit, atelier::pg::migrate::behind(&client)).await {
        Ok(Ok(behind)) => behind,
        Ok(Err(e)) => {
            tracing::warn!(
                cause = %atelier::logging::cause_chain(&e),
                "cannot tell whether the database has this build's migrations; serving it"
            );
            None
        }
        Err(_) => None,
    };
    if let Some(have) = behind {
        let want = atelier::pg::migrate::newest_known();
        let has = match have {
            0 => "predates schema migration 7 (or was never migrated)".to_owned(),
            have => format!("has schema migrations up to {have}"),
        };
        anyhow::bail!(
            "{} {has}, and this build needs {want}: run `atelier migrate` (as the database's \
             owner) first",
            pg::describe(database)
        );
    }
    Ok(())
}

/// Serves until Ctrl-C or SIGTERM, then drains connections and returns. `settings` are
/// `http`'s, made by the caller (which refuses bad ones before anything else).
async fn serve(
    http: &HttpArgs,
    settings: ServeSettings,
    database: tokio_postgres::Config,
    demo: bool,
) -> Result<()> {
    refuse_an_unmigrated_database(&database, settings.db_timeout).await?;
    let listen = settings.listen;
    let cannot_listen = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another server uses that port: --listen picks another"
            }
            std::io::ErrorKind::PermissionDenied => {
                "a port below 1024 needs root or CAP_NET_BIND_SERVICE: --listen picks another"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "that address is none of this host's: --listen 0.0.0.0:PORT listens on every one"
            }
            _ => "--listen picks another address",
        };
        anyhow::anyhow!("cannot listen on {listen}: {e} ({hint})")
    };
    if http.engine == "may" {
        // It would never say READY=1, and systemd would restart it in a loop.
        anyhow::ensure!(
            std::env::var_os("NOTIFY_SOCKET").is_none(),
            "--engine may does not speak systemd's notification protocol: run it without \
             Type=notify, or use --engine fast (the default) or hyper"
        );
        return serve_may(settings, database).await;
    }
    let described = format!("{settings:?}");
    let delay = settings.drain_delay;
    let stop = shutdown_signal();
    let running = atelier::http::start(settings, database)
        .await
        .map_err(cannot_listen)?;
    let base = format!("http://{}", running.addr);
    tracing::info!(address = %running.addr, settings = %described, "serving");
    let notifier = std::sync::Arc::new(atelier::notify::Notifier::from_env());
    let app = std::sync::Arc::clone(&running.app);
    let mut lifecycle = vec![tokio::spawn(atelier::http::lifecycle::report_readiness(
        std::sync::Arc::clone(&app),
        std::sync::Arc::clone(&notifier),
    ))];
    if let Some(interval) = atelier::notify::Notifier::watchdog_interval() {
        lifecycle.push(tokio::spawn(atelier::http::lifecycle::ping_watchdog(
            app,
            std::sync::Arc::clone(&notifier),
            interval,
        )));
    }
    if demo {
        eprintln!("try:");
        for path in [
            "/products?count=3",
            "/products/1",
            "/products/1/styles",
            "/products/1/related",
            "/reviews?product_id=2&sort=newest",
            "/reviews/meta?product_id=2",
            "/qa/questions?product_id=1",
            "/metrics",
        ] {
            eprintln!("  curl '{base}{path}'");
        }
        eprintln!(
            "Ctrl-C stops the server (after a drain; Ctrl-C again skips it) and deletes the private database."
        );
    }
    stop.await;
    // Listened for before /readyz says draining, so that no second signal goes unheard.
    let hurry = shutdown_signal();
    // Draining first, so that no READY=1 can follow the STOPPING=1.
    lifecycle.iter().for_each(tokio::task::JoinHandle::abort);
    running.app.start_draining();
    notifier.notify("STOPPING=1\nSTATUS=draining");
    // The catalog is written while the instance drains: the next start restores it.
    let saving = {
        let app = std::sync::Arc::clone(&running.app);
        tokio::spawn(async move { app.save_snapshot().await })
    };
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "draining: /readyz answers 503 while requests are still served, then accepting stops \
         (a second SIGINT or SIGTERM stops accepting at once)"
    );
    let cache = std::sync::Arc::clone(&running.app.cache);
    running.drain_unless(delay, hurry).await?;
    match saving.await {
        Ok(Ok(Some(written))) => tracing::info!(
            bodies = written.bodies,
            mb = written.bytes >> 20,
            left_out = written.left_out,
            "catalog snapshot written"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::warn!(
            cause = %atelier::logging::cause_chain(&e),
            "no catalog snapshot at shutdown: the next start warms from scratch or an older snapshot"
        ),
        Err(e) => tracing::warn!(cause = %e, "the catalog snapshot stopped"),
    }
    // The process exits next: the kernel takes the catalog back at once, where freeing it body
    // by body kept a full-scale instance alive 5 s longer.
    cache.abandon_catalog_for_exit();
    tracing::info!(catalog = "left to the exit", "stopped");
    Ok(())
}

/// Locks the process's pages in RAM as they are touched (`MCL_ONFAULT`: nothing is touched in
/// advance, and memory the allocator has reserved but not used stays unbacked). A catalog of
/// gigabytes is mostly cold to the kernel, however hot its bodies are to clients: a host's
/// proactive reclaim (DAMON on this project's benchmark machine) kept scanning it, and the
/// fixed-rate p99 was twice what it is with the pages locked (docs/benchmarks.md, "The host's
/// reclaim").
fn lock_memory() -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the one struct it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    // Past a finite limit every later allocation would fail, mid-warm-up: refuse now, unless
    // the process may lock past any limit.
    anyhow::ensure!(
        got != 0 || limit.rlim_cur == libc::RLIM_INFINITY || may_lock_past_limits(),
        "--lock-memory: the memlock limit is {} KiB and the process lacks CAP_IPC_LOCK; raise \
         the limit to unlimited (systemd: LimitMEMLOCK=infinity; a shell: ulimit -l \
         unlimited), grant CAP_IPC_LOCK, or run without --lock-memory",
        limit.rlim_cur / 1024
    );
    // SAFETY: mlockall takes flags only and touches none of this program's memory.
    let locked =
        unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if locked != 0 {
        let cause = std::io::Error::last_os_error();
        anyhow::bail!(
            "--lock-memory: cannot lock the process's memory ({cause}): grant it CAP_IPC_LOCK \
             or an unlimited memlock limit, or run without --lock-memory"
        );
    }
    tracing::info!("memory locked as it is touched (--lock-memory)");
    Ok(())
}

/// Whether this process holds CAP_IPC_LOCK, which lets it lock memory past its limit: bit 14
/// of the effective set in `/proc/self/status` (the kernel's word, not the user id: root in a
/// container may lack it, and a service may be granted it without being root).
fn may_lock_past_limits() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(feature = "may-server")]
async fn serve_may(settings: ServeSettings, database: tokio_postgres::Config) -> Result<()> {
    let listen = settings.listen;
    let (app, background) = atelier::http::build_app(settings, database).await;
    atelier::http::may_server::start(app, tokio::runtime::Handle::current(), listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("serving on http://{listen} (may_minihttp)");
    shutdown_signal().await;
    background.abort();
    Ok(())
}

#[cfg(not(feature = "may-server"))]
async fn serve_may(_: ServeSettings, _: tokio_postgres::Config) -> Result<()> {
    anyhow::bail!("this build has no may_minihttp front end: rebuild with `cargo build --release --features may-server`, or use --engine fast (the default) or hyper")
}

/// Resolves on SIGINT or SIGTERM. Both are caught from the moment this is called, not from
/// its first poll: one sent while the server starts must stop it gracefully, not kill it, and
/// one sent the instant a drain begins must cut that drain short.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            /// The next delivery of `signal`; never, if it could not be listened for.
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(interrupt) => {}
                () = next(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{partial_dir, remove_abandoned_partials};

    #[test]
    fn only_the_partial_sets_of_processes_gone_are_removed() {
        let parent = std::env::temp_dir().join(format!("atelier-partials-{}", std::process::id()));
        let dir = parent.join("set");
        // No process has the largest id: its set was abandoned.
        let abandoned = partial_dir(&dir, u32::MAX);
        let in_progress = partial_dir(&dir, std::process::id());
        let another_sets = partial_dir(&parent.join("other"), u32::MAX);
        for partial in [&abandoned, &in_progress, &another_sets] {
            std::fs::create_dir_all(partial).unwrap();
        }
        assert_eq!(abandoned, parent.join(format!("set.{}.partial", u32::MAX)));
        remove_abandoned_partials(&dir);
        assert!(!abandoned.exists());
        assert!(in_progress.exists());
        assert!(another_sets.exists());
        std::fs::remove_dir_all(parent).unwrap();
    }
}
