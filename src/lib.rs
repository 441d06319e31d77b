//! Atelier edge server: the storefront's JSON API, served from an in-process cache of finished
//! response bodies kept current from PostgreSQL.
//!
//! Modules, with dependencies pointing one way:
//! - [`dataset`]: the CSV data set's description, and the generator that writes one;
//! - [`pg`]: everything that talks to PostgreSQL (connections, the private cluster, schema
//!   migrations, the bulk loader);
//! - [`progress`] and [`time`]: small shared helpers.

pub mod dataset;
pub mod pg;
pub mod progress;
pub mod time;
