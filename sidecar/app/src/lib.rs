//! Outrigger, the sidecar binary's library: the command line, the config, and the wiring that
//! assembles adapters, stores and policies into a running pipeline.
//!
//! It assembles; it does not decide. Message fates are decided by `outrigger-policies`, broker
//! calls live in the adapter crates, dedup records in the store crates.
//!
//! # Layout
//! - [`brokers`]: the brokers this build knows, as one closed set; the only file naming them.
//! - [`cli`]: the clap command line.
//! - [`config`]: the TOML policy: schema, loading with env overrides, validation.
//! - [`pipeline`]: claim → deliver → classify → settle, per message, and the consumer loop,
//!   executing what `outrigger-policies` decides, under the route each message takes.
//! - [`delivery`]: the HTTP client to the app and the request headers.
//! - [`store`]: the dedup stores as one enum.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/dlq`.
//! - [`dlq`]: `outrigger dlq` and the admin API's dead-letter routes.
//! - [`metrics`]: metric names and the registry.
//! - [`run`]: `outrigger run` wiring. [`demo`]: `outrigger demo`.
//! - [`shutdown`], [`reload`], [`telemetry`]: SIGTERM/SIGINT, SIGHUP, and logging.

pub mod admin;
pub mod brokers;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod dlq;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod run;
pub mod shutdown;
pub mod store;
pub mod telemetry;
