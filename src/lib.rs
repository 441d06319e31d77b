//! Atelier edge server: the storefront's JSON API, served from an in-process cache of finished
//! response bodies kept current from PostgreSQL.
//!
//! Modules, with dependencies pointing one way (`http` → `cache` → `render` → `pg`):
//! - [`http`]: the HTTP edge — server loop, routing, responses, metrics;
//! - [`cache`]: the response cache — keys, byte budget, single-flight fills, invalidation;
//! - [`render`]: database rows to JSON bytes, one module per API area, with no database
//!   access (the cache's fills read the rows and hand them over);
//! - [`pg`]: everything that talks to PostgreSQL (pool, read queries, the private cluster,
//!   schema migrations, the bulk loader);
//! - [`dataset`]: the CSV data set's description, and the generator that writes one;
//! - [`domain`]: the vocabulary every layer shares (review orders, marks, changes);
//! - [`logging`]: what goes to the log, and how the binary sets it up;
//! - [`notify`]: systemd's notification protocol (readiness, status, watchdog);
//! - [`cart_key`]: what a caller's token becomes before a cart is stored under it;
//! - [`config`], [`digits`], [`progress`], [`task`] and [`time`]: small shared pieces.

pub mod cache;
pub mod cart_key;
pub mod config;
pub mod dataset;
pub mod digits;
pub mod domain;
pub mod http;
pub mod logging;
pub mod notify;
pub mod pg;
pub mod progress;
pub mod render;
pub mod shard;
pub mod stripes;
pub mod task;
pub mod time;
