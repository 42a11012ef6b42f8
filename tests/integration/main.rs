//! berth's integration tests: one test binary (fast links), every test drives the
//! real `berth` binary (BERTH_BIN, or the one cargo built) as a user would.

mod harness;
mod hostile;

mod client;
mod client_hardening;
mod dispatch;
mod engine;
mod engine_api;
mod engine_site;
mod init;
mod kernels;
mod layers;
mod logcollect;
mod mkimage;
mod oldkernel;
mod registry_api;
mod registry_config;
mod registry_gc;
mod registry_hardening;
mod registry_page;
mod registry_skopeo;
mod s3;
mod signing;
