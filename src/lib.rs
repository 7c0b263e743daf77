//! ams-thumbnails: turns a video asset id into ready-to-use thumbnail URLs.
//!
//! The flow of a request: [`http`] (parse, validate) -> [`resolver::Resolver`] (cache, single
//! flight) -> [`source`] backends (locate the asset, list its blobs, link them) ->
//! [`recognise`] (which blobs are thumbnails).

pub mod asset_id;
pub mod azure;
pub mod catalog_tools;
pub mod config;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod propagation;
pub mod recognise;
pub mod resolver;
pub mod secret;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod url_path;

pub use config::Settings;
pub use http::{AppState, app};
pub use server::Server;
