//! Everything that talks to PostgreSQL: connecting, the private throwaway cluster, schema
//! migrations, the bulk loader, and where reads go (the primary or a fenced replica).

/// The mean of characteristic `c`'s ratings as the API shows it, as SQL: every rating by a
/// review that is not reported counts, whatever the review's product
/// (sql/0008_characteristic_means.sql), to 16 places. The keyed read (`read`) and the warm-up's
/// scan (`scan`) both read it from here, so that they cannot disagree.
macro_rules! characteristic_mean {
    () => {
        "(SELECT round(avg(cr.value), 16)::text
            FROM characteristic_reviews cr
            JOIN reviews r ON r.id = cr.review_id
           WHERE cr.characteristic_id = c.id AND NOT r.reported)"
    };
}

pub mod cluster;
pub mod database;
pub mod feed;
pub mod fence;
pub mod load;
pub mod migrate;
pub mod pool;
pub mod read;
pub mod replica;
pub mod restore;
pub mod scan;
pub mod write;

use tokio_postgres::{Client, Config, NoTls};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not a valid PostgreSQL connection string (give a URL such as postgres://user@host:5432/atelier, or key=value pairs such as `host=/run/postgresql dbname=atelier`): {0}")]
    BadUrl(#[source] tokio_postgres::Error),
    #[error("cannot connect to PostgreSQL at {target}: {source} ({})", connect_hint(.source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("a query failed: {}", described(.0))]
    Failed(#[source] tokio_postgres::Error),
    #[error("{context}: {source}")]
    Query {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl DbError {
    /// Wraps a query error with what was being done when it happened.
    pub fn query(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        let context = context.into();
        move |source| DbError::Query { context, source }
    }
}

impl DbError {
    /// Classifies an error from the request path: a lost connection, or a query cancelled by
    /// `statement_timeout`, means the database is unavailable (503); anything else, a row the
    /// client cannot decode included (a date no body can show), is a failure (500).
    pub fn from_query(e: tokio_postgres::Error) -> DbError {
        let described = || described(&e);
        // An error without a SQLSTATE whose cause is not the connection's I/O is a value the
        // client could not convert: it says nothing about the database being away.
        let conversion = e.code().is_none()
            && std::error::Error::source(&e).is_some_and(|s| !s.is::<std::io::Error>());
        if conversion {
            DbError::Failed(e)
        } else if e.is_closed() || e.code().is_none() {
            DbError::Unavailable(described())
        } else {
            match e.code() {
                Some(code)
                    if code.code().starts_with("08")
                        || code.code().starts_with("57P")
                        || *code == tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS
                        || *code == tokio_postgres::error::SqlState::QUERY_CANCELED =>
                {
                    DbError::Unavailable(described())
                }
                _ => DbError::Failed(e),
            }
        }
    }

    /// Whether the database could not be reached (rather than refusing a query).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_) | DbError::Connect { .. })
    }

    /// Whether a statement gave up waiting for a lock (`lock_timeout`): another session holds
    /// a table it reads, as a bulk load or a migration does.
    pub fn is_lock_timeout(&self) -> bool {
        match self {
            DbError::Failed(e) | DbError::Query { source: e, .. } => {
                e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
            }
            _ => false,
        }
    }
}

/// What PostgreSQL said (message and SQLSTATE), or the client's own error.
fn described(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// What to check after a failed connection: the server refused it (its answer names the
/// cause), or nothing answered at all.
fn connect_hint(error: &tokio_postgres::Error) -> &'static str {
    use tokio_postgres::error::SqlState;
    let Some(db) = error.as_db_error() else {
        return "is the server running, and does DATABASE_URL name it?";
    };
    match *db.code() {
        SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            "the server refused the user or password: check those DATABASE_URL gives, and pg_hba.conf"
        }
        SqlState::INVALID_CATALOG_NAME => {
            "the server has no such database: create it (createdb), or name another in DATABASE_URL"
        }
        SqlState::TOO_MANY_CONNECTIONS => {
            "the server is at max_connections: lower --pool-size (or --jobs), or raise its limit"
        }
        _ => "the server refused the connection: its message says why",
    }
}

/// Parses a `DATABASE_URL` (URL or `key=value` form).
pub fn parse_url(url: &str) -> Result<Config, DbError> {
    url.parse::<Config>().map_err(DbError::BadUrl)
}

/// Where a configuration points, for messages (never includes the password).
pub fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("?");
    format!("{host}:{port}/{db}")
}

/// Makes a connection notice a dead peer within seconds rather than the operating system's
/// quarter of an hour: TCP keepalives probe an idle connection, the TCP user timeout drops
/// one whose sent data goes unacknowledged, and connecting is bounded by `limit`. (Unix
/// sockets ignore the TCP settings; they fail at once when the server goes.)
pub fn notice_failures(config: &mut Config, limit: std::time::Duration) {
    config.connect_timeout(limit);
    keep_alive(config, limit.max(std::time::Duration::from_secs(5)));
}

/// Appends server settings (`-c name=value`) to the connection's startup options. The request
/// path and the feed turn JIT compilation off: their queries are small, and compiling one
/// (which PostgreSQL does when its cost estimate is high, as a LIMIT over a union can make
/// it) costs more milliseconds than running it.
pub fn add_options(config: &mut Config, options: &str) {
    let combined = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {options}"),
        _ => options.to_owned(),
    };
    config.options(&combined);
}

fn keep_alive(config: &mut Config, user_timeout: std::time::Duration) {
    use std::time::Duration;
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(user_timeout);
}

/// Opens one connection and drives it on a background task until the client is dropped.
///
/// Connections made here (the command line's, the loader's) notice a dead peer too: keepalives
/// and, unless the caller chose one, a generous TCP user timeout.
pub async fn connect(config: &Config) -> Result<Client, DbError> {
    let mut config = config.clone();
    if config.get_tcp_user_timeout().is_none() {
        keep_alive(&mut config, std::time::Duration::from_secs(30));
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| DbError::Connect {
            target: describe(&config),
            source,
        })?;
    tokio::spawn(async move {
        // The error surfaces again on the client's next call; nothing to do with it here.
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn connections_notice_a_dead_peer_within_seconds() {
        let mut config = tokio_postgres::Config::new();
        super::notice_failures(&mut config, Duration::from_millis(800));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(5));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(config.get_keepalives_retries(), Some(3));
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&Duration::from_millis(800))
        );
    }
}
