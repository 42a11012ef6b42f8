//! The Docker Engine API's container types, as `POST /containers/create` sends
//! them and `GET /containers/{id}/json` returns them (swagger v1.41:
//! ContainerConfig, HostConfig). Only the fields the engine acts on are typed;
//! everything else a client sends is kept as it came (`extra`) and returned by
//! inspect, so tools that set options berth ignores see them round-trip.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `Config` of a container (ContainerConfig).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Config {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub image: String,
    pub volumes: Option<BTreeMap<String, Value>>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `-p`: `PortBindings["4080/tcp"] = [{HostIp, HostPort}]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    pub config: BTreeMap<String, String>,
}

/// `HostConfig.Mounts[]` (only `bind` is supported).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountSpec {
    #[serde(rename = "Type")]
    pub kind: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `HostConfig` of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub log_config: LogConfig,
    pub network_mode: String,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub dns: Option<Vec<String>>,
    pub dns_options: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub memory: i64,
    pub nano_cpus: i64,
    pub pids_limit: Option<i64>,
    pub init: Option<bool>,
    pub mounts: Option<Vec<MountSpec>>,
    pub shm_size: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `POST /containers/create`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateBody {
    #[serde(flatten)]
    pub config: Config,
    #[serde(rename = "HostConfig", default)]
    pub host_config: HostConfig,
}

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub detach_keys: String,
    pub tty: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Vec<String>,
    pub privileged: bool,
    pub user: String,
    pub working_dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_round_trip_and_nulls_are_accepted() {
        let body = r#"{"Hostname":"","Cmd":["sleep","100"],"Entrypoint":null,"Env":null,
            "Image":"bb:test","Frobnicate":{"a":1},
            "HostConfig":{"Binds":["/a:/b:ro"],"PidsLimit":null,"CgroupnsMode":"","Memory":0,
              "PortBindings":{"4080/tcp":[{"HostIp":"127.0.0.1","HostPort":"4080"}]},
              "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},"KernelMemory":0},
            "NetworkingConfig":{"EndpointsConfig":{}}}"#;
        let b: CreateBody = serde_json::from_str(body).unwrap();
        assert_eq!(
            b.config.cmd.as_deref(),
            Some(&["sleep".to_string(), "100".to_string()][..])
        );
        assert_eq!(b.config.extra["Frobnicate"]["a"], 1);
        assert!(b.config.extra.contains_key("NetworkingConfig"));
        assert_eq!(b.host_config.extra["CgroupnsMode"], "");
        assert_eq!(b.host_config.restart_policy.maximum_retry_count, 3);
        let back = serde_json::to_value(&b.host_config).unwrap();
        assert_eq!(back["KernelMemory"], 0);
        assert_eq!(
            back["PortBindings"]["4080/tcp"][0]["HostPort"],
            Value::from("4080")
        );
    }
}
