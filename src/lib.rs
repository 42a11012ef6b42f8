//! berth's core: everything the applets share — formats, storage, TLS, HTTP, auth,
//! configuration, logging, cgroups. The core never depends on an applet; applets
//! (in `applets/`, compiled into the binary) depend only on this crate.

pub mod archive;
pub mod auth;
pub mod cgroup;
pub mod config;
pub mod digest;
pub mod error;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod image;
pub mod log;
pub mod logfile;
pub mod net;
pub mod oci;
pub mod proc;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod signing;
pub mod store;
pub mod sys;
pub mod tls;
pub mod util;

pub use error::{Error, Kind, Result};

/// berth's version, as `--version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
