//! Logs: a line per event worth an operator's attention — a 5xx with its cause chain, a slow
//! request, a change-feed event, a start or stop with its settings — written with `tracing` to
//! stderr: readable on a terminal, one JSON object a line elsewhere (journald, log shippers).
//!
//! The library only emits events; the binary installs the subscriber ([`init`]).

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human on a terminal, JSON otherwise.
    Auto,
    Human,
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "the log filter {filter:?} is not valid (try `info`, or `warn,atelier=debug`): {source}"
    )]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a logger is installed already")]
    Installed,
}

/// Installs the process's logger: events at or above `filter` (a level, or `target=level`
/// pairs such as `warn,atelier=debug`), in `format`, to stderr.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LogError> {
    let targets: Targets = filter.parse().map_err(|source| LogError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Human => false,
        LogFormat::Json => true,
    };
    let registry = tracing_subscriber::registry();
    let installed = if json {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(targets);
        registry.with(layer).try_init()
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(targets);
        registry.with(layer).try_init()
    };
    installed.map_err(|_| LogError::Installed)
}

/// What a panic said, if it said it with a string.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// `error` and its sources, outermost first, joined by `: `.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Error types that print their source in their own message would repeat it.
        if !chain.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_chain_names_every_cause_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(cause_chain(&e), "outer: inner");
        assert!(init(LogFormat::Human, "not a level=at all=").is_err());
    }
}
