//! Containers on disk, under `GRAPH/containers/<id>/`:
//!
//! - `config.json` — what `create` decided (the API's Config and HostConfig, the
//!   image, the resolved command, the network assignment, the name). Written by
//!   engined only.
//! - `state.json` — how the container is doing (status, pid, exit code, times,
//!   restart count). Written by the container's shim while one runs, by engined
//!   otherwise, so there is always a single writer.
//!
//! Both are replaced atomically (temp file, fsync, rename): a crash at any moment
//! leaves the old record or the new one, never a torn one, and engined re-reads
//! them at start to re-adopt running containers.

use super::model::{Config, HostConfig};
use berth::digest::Digest;
use berth::error::{Context, Error, Kind, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a container's address comes from and what it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetAssign {
    /// `bridge`, `host` or `none`.
    pub mode: String,
    pub bridge: String,
    pub ip: Option<std::net::Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<std::net::Ipv4Addr>,
    pub mtu: Option<u32>,
}

/// What `create` decided; never changes afterwards (but for the name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Without the leading `/` the API shows.
    pub name: String,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    /// As the client named it (`Config.Image` is the same).
    pub image: String,
    /// The image's config digest (docker's image id).
    pub image_id: Digest,
    /// The image's manifest in the local store (what the lease holds).
    pub manifest: Digest,
    /// The image's layers, top first, as overlay lowerdirs.
    pub lowerdirs: Vec<PathBuf>,
    /// Entrypoint + Cmd as they will run.
    pub path: String,
    pub args: Vec<String>,
    pub config: Config,
    pub host_config: HostConfig,
    pub net: NetAssign,
    /// Host directory for the container's logs (logcollect), if any: bound at
    /// `log_target` inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_target: Option<String>,
    /// Anonymous volumes (`Config.Volumes` paths no bind covers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

/// An anonymous volume: `GRAPH/volumes/NAME/_data`, mounted at `target`,
/// filled from the image's content there at the first start (as Docker's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub target: String,
}

impl Volume {
    pub fn data(&self, graph: &std::path::Path) -> PathBuf {
        graph.join("volumes").join(&self.name).join("_data")
    }
}

/// A container's life as the shim reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// created, running, restarting, exited, dead, removing
    pub status: String,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: u32,
    pub oom_killed: bool,
    /// The shim looking after it (0 when none).
    pub shim_pid: i32,
    /// Set when a user stopped it: unless-stopped does not restart then.
    #[serde(default)]
    pub stopped_by_user: bool,
    /// Published ports as the shim bound them (a host port 0 asked for any).
    #[serde(default)]
    pub ports: Vec<super::ports::PortMap>,
}

impl State {
    pub fn created() -> State {
        State {
            status: "created".into(),
            ..Default::default()
        }
    }
    pub fn running(&self) -> bool {
        self.status == "running" || self.status == "restarting"
    }
}

/// The directory of all containers.
#[derive(Clone)]
pub struct Dir {
    root: PathBuf,
}

impl Dir {
    pub fn open(graph: &Path) -> Result<Dir> {
        let root = graph.join("containers");
        std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o710))?;
        Ok(Dir { root })
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| valid_id(n))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn save_record(&self, r: &Record) -> Result<()> {
        let dir = self.path(&r.id);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        write_json(&dir.join("config.json"), r)
    }

    pub fn load_record(&self, id: &str) -> Result<Record> {
        read_json(&self.path(id).join("config.json"))
    }

    /// Record a state; never brings back the directory of a removed container.
    pub fn save_state(&self, id: &str, s: &State) -> Result<()> {
        let dir = self.path(id);
        if !dir.is_dir() {
            return Err(Error::not_found(format!("container {id} was removed")));
        }
        write_json(&dir.join("state.json"), s)
    }

    pub fn load_state(&self, id: &str) -> Result<State> {
        match read_json(&self.path(id).join("state.json")) {
            Err(e) if e.kind() == Kind::NotFound => Ok(State::created()),
            other => other,
        }
    }
}

/// Container ids are 64 lowercase hex digits (never a path).
pub fn valid_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::internal(e.to_string()))?;
    berth::fsutil::atomic_write_mode(path, &bytes, 0o600)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

/// Now as RFC 3339 with nanoseconds, as the API writes times.
pub fn now_nanos() -> String {
    rfc3339_nanos(std::time::SystemTime::now())
}

pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let base = berth::util::rfc3339(d.as_secs() as i64);
    format!("{}.{:09}Z", &base[..base.len() - 1], d.subsec_nanos())
}

/// Parse what [`rfc3339_nanos`] writes (and plain RFC 3339) to unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let (head, _) = s.split_once('.').unwrap_or((s.trim_end_matches('Z'), ""));
    berth::util::parse_rfc3339(&format!("{}Z", head.trim_end_matches('Z')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ids() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_490_616_000, 5);
        assert_eq!(rfc3339_nanos(t), "2017-03-27T12:00:00.000000005Z");
        assert_eq!(
            parse_time("2017-03-27T12:00:00.000000005Z"),
            Some(1_490_616_000)
        );
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id("../../etc"));
    }
}
