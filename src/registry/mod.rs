//! The client side of the distribution protocol: settings (search, blocked and
//! insecure registries, certs.d), a per-host client with auth, and pull/push
//! between registries and the local image store.

pub mod client;
pub mod settings;
pub mod signatures;
pub mod transfer;

pub use client::Registry;
pub use settings::Settings;
