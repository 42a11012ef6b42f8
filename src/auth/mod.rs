//! Authentication: server-side htpasswd checking (registryd) and, for clients,
//! credentials from docker's config.json and the basic/bearer challenge flow.

pub mod challenge;
pub mod dockercfg;
pub mod htpasswd;
