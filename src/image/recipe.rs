//! The recipe: a YAML file naming the image, its optional base, variables, the
//! ordered build stages, how stages group into layers, the image config and the
//! default outputs. Everything is checked before anything runs, and every error
//! says `file:line: path: what is wrong`, so a typo costs seconds, not an hour of
//! yum. Unknown keys are errors, not warnings: a misspelt `keep:` under a
//! `remove:` stage must not go on to delete what it was meant to keep.

use crate::config::{Doc, Node, Value};
use crate::error::{Error, Result};
use crate::fsutil::glob::Glob;
use crate::image::Format;
use crate::oci::RunConfig;
use crate::sys::NodeKind;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A parsed, validated recipe.
#[derive(Debug)]
pub struct Recipe {
    /// Relative paths in the recipe (copy sources, outputs) start here.
    pub dir: PathBuf,
    pub name: String,
    pub base: Option<String>,
    pub epoch: Option<i64>,
    /// Variables, recipe order, with `--env` overrides applied.
    pub env: Vec<(String, String)>,
    pub stages: Vec<Stage>,
    pub layers: Vec<Layer>,
    pub config: RunConfig,
    pub output: Output,
}

#[derive(Debug)]
pub struct Stage {
    pub name: String,
    /// `file:line` of the stage, for messages.
    pub origin: String,
    pub action: Action,
}

#[derive(Debug)]
pub enum Action {
    /// A shell command on the host, `$ROOT` set to the root.
    Run(String),
    /// A shell command inside the root (`/bin/sh -c` after chroot).
    Chroot(String),
    Copy(Vec<CopyItem>),
    Append(Vec<AppendItem>),
    Remove {
        paths: Vec<Glob>,
        keep: Vec<Glob>,
    },
    Devices(Vec<&'static Device>),
    Set(Vec<SetItem>),
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Run(_) => "run",
            Action::Chroot(_) => "chroot",
            Action::Copy(_) => "copy",
            Action::Append(_) => "append",
            Action::Remove { .. } => "remove",
            Action::Devices(_) => "devices",
            Action::Set(_) => "set",
        }
    }
}

#[derive(Debug)]
pub struct CopyItem {
    /// Host path (absolute, or made so from the recipe's directory).
    pub src: PathBuf,
    /// `file:line` of `src`, for the pre-flight check.
    pub origin: String,
    /// Path inside the root; a trailing `/` means "into this directory".
    pub dest: String,
    /// Mode of copied regular files (directories keep theirs).
    pub mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
}

#[derive(Debug)]
pub struct AppendItem {
    pub file: String,
    pub lines: Vec<String>,
    /// Mode when the file is created.
    pub mode: Option<u32>,
}

#[derive(Debug)]
pub struct SetItem {
    pub file: String,
    /// The whole content (a yum variable file holds just its value)…
    pub value: Option<String>,
    /// …or `KEY=VALUE` lines edited in place, others kept.
    pub values: Vec<(String, String)>,
    pub mode: Option<u32>,
}

/// What a `devices` stage can make in `/dev`.
#[derive(Debug, PartialEq, Eq)]
pub enum DevKind {
    Node(NodeKind, u64, u64),
    Link(&'static str),
    Dir,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Device {
    pub name: &'static str,
    pub kind: DevKind,
    pub mode: u32,
}

/// The minimal /dev of a container image, as mkimage-yum.sh and docker make it.
pub static DEVICES: &[Device] = &[
    Device {
        name: "null",
        kind: DevKind::Node(NodeKind::Char, 1, 3),
        mode: 0o666,
    },
    Device {
        name: "zero",
        kind: DevKind::Node(NodeKind::Char, 1, 5),
        mode: 0o666,
    },
    Device {
        name: "full",
        kind: DevKind::Node(NodeKind::Char, 1, 7),
        mode: 0o666,
    },
    Device {
        name: "random",
        kind: DevKind::Node(NodeKind::Char, 1, 8),
        mode: 0o666,
    },
    Device {
        name: "urandom",
        kind: DevKind::Node(NodeKind::Char, 1, 9),
        mode: 0o666,
    },
    Device {
        name: "tty",
        kind: DevKind::Node(NodeKind::Char, 5, 0),
        mode: 0o666,
    },
    Device {
        name: "console",
        kind: DevKind::Node(NodeKind::Char, 5, 1),
        mode: 0o600,
    },
    Device {
        name: "ptmx",
        kind: DevKind::Node(NodeKind::Char, 5, 2),
        mode: 0o666,
    },
    Device {
        name: "fd",
        kind: DevKind::Link("/proc/self/fd"),
        mode: 0o777,
    },
    Device {
        name: "stdin",
        kind: DevKind::Link("/proc/self/fd/0"),
        mode: 0o777,
    },
    Device {
        name: "stdout",
        kind: DevKind::Link("/proc/self/fd/1"),
        mode: 0o777,
    },
    Device {
        name: "stderr",
        kind: DevKind::Link("/proc/self/fd/2"),
        mode: 0o777,
    },
    Device {
        name: "pts",
        kind: DevKind::Dir,
        mode: 0o755,
    },
    Device {
        name: "shm",
        kind: DevKind::Dir,
        mode: 0o1777,
    },
];

/// A layer: a name and the consecutive stages that make it.
#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub stages: Range<usize>,
}

/// Outputs the recipe asks for (the command line overrides each).
#[derive(Debug, Default)]
pub struct Output {
    pub tag: Option<String>,
    pub tar: Option<PathBuf>,
    pub oci: Option<PathBuf>,
    pub format: Option<Format>,
}

const TOP_KEYS: &[&str] = &[
    "name", "epoch", "base", "env", "stages", "layers", "config", "output",
];
const CONFIG_KEYS: &[&str] = &[
    "Cmd",
    "Entrypoint",
    "Env",
    "Labels",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
];
const OUTPUT_KEYS: &[&str] = &["tag", "tar", "oci", "format"];
const ACTIONS: &[&str] = &[
    "run", "chroot", "copy", "append", "remove", "devices", "set",
];

/// Expand `${NAME}` and `$NAME` from `vars`; `$$` is a `$`. Unknown names are
/// errors (the message names the variable).
pub fn expand(s: &str, vars: &[(String, String)]) -> std::result::Result<String, String> {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        let (name, next) = if b.get(i + 1) == Some(&b'{') {
            match s[i + 2..].find('}') {
                Some(e) => (&s[i + 2..i + 2 + e], i + 3 + e),
                None => return Err(format!("unclosed ${{ in {s:?}")),
            }
        } else {
            let n = s[i + 1..]
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            (&s[i + 1..i + 1 + n], i + 1 + n)
        };
        if name.is_empty() {
            out.push('$');
            i += 1;
            continue;
        }
        match vars.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => return Err(format!("unknown variable ${name} (define it under env:)")),
        }
        i = next;
    }
    Ok(out)
}

/// Parse a file mode written as an octal string ("0755", "4755").
fn parse_mode(doc: &Doc, path: &str) -> Result<Option<u32>> {
    match doc.node(path).map(|n| &n.value) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => u32::from_str_radix(s.trim(), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Some)
            .ok_or_else(|| doc.error(path, format!("{s:?} is not an octal mode like \"0755\""))),
        Some(_) => Err(doc.error(
            path,
            "write the mode as a quoted octal string, e.g. mode: \"0755\" (YAML reads 0755 as a number)",
        )),
    }
}

fn parse_owner(doc: &Doc, path: &str) -> Result<Option<(u32, u32)>> {
    let Some(s) = doc.str(path)? else {
        return Ok(None);
    };
    let (u, g) = s.split_once(':').unwrap_or((&s, &s));
    match (u.trim().parse(), g.trim().parse()) {
        (Ok(u), Ok(g)) => Ok(Some((u, g))),
        _ => Err(doc.error(
            path,
            format!("{s:?}: owners are numeric, UID:GID (names differ between host and image)"),
        )),
    }
}

struct Parser<'a> {
    doc: &'a Doc,
    dir: &'a Path,
    vars: Vec<(String, String)>,
}

impl Parser<'_> {
    fn expand(&self, path: &str, s: &str) -> Result<String> {
        expand(s, &self.vars).map_err(|m| self.doc.error(path, m))
    }

    fn need_str(&self, path: &str) -> Result<String> {
        match self.doc.str(path)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(self.doc.error(path, "required")),
        }
    }

    fn reject_unknown(&self, base: &str, node: &Node, known: &[&str]) -> Result<()> {
        if !matches!(node.value, Value::Map(_)) {
            return Err(self.doc.error(base, "expected a map of settings"));
        }
        for (k, _) in node.entries() {
            if !known.contains(&k.as_str()) {
                return Err(self.doc.error(
                    &format!("{base}.{k}"),
                    format!("unknown key (known here: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The items of a key that takes one map or a list of maps.
    fn items(&self, path: &str) -> Vec<String> {
        match self.doc.node(path).map(|n| &n.value) {
            Some(Value::Seq(v)) => (0..v.len()).map(|i| format!("{path}.{i}")).collect(),
            _ => vec![path.to_string()],
        }
    }

    /// A map entry whose key may hold dots, as text.
    fn entry_value(&self, map: &str, key: &str, n: &Node) -> Result<String> {
        match &n.value {
            Value::Null => Ok(String::new()),
            _ => n
                .scalar_string()
                .ok_or_else(|| self.entry_error(map, key, n, "expected a single value")),
        }
    }

    fn entry_error(&self, map: &str, key: &str, n: &Node, msg: impl std::fmt::Display) -> Error {
        Error::config(format!("{}: {map}.{key}: {msg}", self.doc.origin(n)))
    }

    fn host_path(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn root_path(&self, path: &str) -> Result<String> {
        let s = self.expand(path, &self.need_str(path)?)?;
        if s.contains('\0') {
            return Err(self.doc.error(path, "contains a NUL byte"));
        }
        Ok(s)
    }

    fn stage(&self, i: usize) -> Result<Stage> {
        let base = format!("stages.{i}");
        let node = self.doc.node(&base).unwrap();
        let mut known: Vec<&str> = vec!["name"];
        known.extend(ACTIONS);
        known.push("keep");
        self.reject_unknown(&base, node, &known)?;
        let name = self.need_str(&format!("{base}.name"))?;
        if name.contains(['\n', '\r']) {
            return Err(self.doc.error(&format!("{base}.name"), "one line, please"));
        }
        let acts: Vec<&str> = ACTIONS
            .iter()
            .copied()
            .filter(|a| node.get(a).is_some())
            .collect();
        let kind = match acts.as_slice() {
            [one] => *one,
            [] => {
                return Err(self.doc.error(
                    &base,
                    format!(
                        "stage {name:?} does nothing: give one of {}",
                        ACTIONS.join(", ")
                    ),
                ));
            }
            many => {
                return Err(self.doc.error(
                    &base,
                    format!(
                        "stage {name:?} has {}: one action per stage",
                        many.join(" and ")
                    ),
                ));
            }
        };
        if kind != "remove" && node.get("keep").is_some() {
            return Err(self
                .doc
                .error(&format!("{base}.keep"), "keep belongs to a remove stage"));
        }
        let p = format!("{base}.{kind}");
        let action = match kind {
            "run" => Action::Run(self.need_str(&p)?),
            "chroot" => Action::Chroot(self.need_str(&p)?),
            "copy" => {
                let mut v = Vec::new();
                for it in self.items(&p) {
                    self.reject_unknown(
                        &it,
                        self.doc.node(&it).unwrap(),
                        &["src", "dest", "mode", "owner"],
                    )?;
                    let src =
                        self.expand(&format!("{it}.src"), &self.need_str(&format!("{it}.src"))?)?;
                    v.push(CopyItem {
                        src: self.host_path(&src),
                        origin: self
                            .doc
                            .node(&format!("{it}.src"))
                            .map(|n| self.doc.origin(n))
                            .unwrap_or_default(),
                        dest: self.root_path(&format!("{it}.dest"))?,
                        mode: parse_mode(self.doc, &format!("{it}.mode"))?,
                        owner: parse_owner(self.doc, &format!("{it}.owner"))?,
                    });
                }
                Action::Copy(v)
            }
            "append" => {
                let mut v = Vec::new();
                for it in self.items(&p) {
                    self.reject_unknown(
                        &it,
                        self.doc.node(&it).unwrap(),
                        &["file", "lines", "mode"],
                    )?;
                    let lp = format!("{it}.lines");
                    let mut lines = Vec::new();
                    for l in self.doc.str_list(&lp)? {
                        // a block scalar is several lines
                        for one in l.lines() {
                            lines.push(self.expand(&lp, one)?);
                        }
                    }
                    if lines.is_empty() {
                        return Err(self.doc.error(&lp, "required: the lines to append"));
                    }
                    v.push(AppendItem {
                        file: self.root_path(&format!("{it}.file"))?,
                        lines,
                        mode: parse_mode(self.doc, &format!("{it}.mode"))?,
                    });
                }
                Action::Append(v)
            }
            "set" => {
                let mut v = Vec::new();
                for it in self.items(&p) {
                    self.reject_unknown(
                        &it,
                        self.doc.node(&it).unwrap(),
                        &["file", "value", "values", "mode"],
                    )?;
                    let vp = format!("{it}.values");
                    let mut values = Vec::new();
                    if let Some(n) = self.doc.node(&vp) {
                        if !matches!(n.value, Value::Map(_)) {
                            return Err(self.doc.error(&vp, "expected KEY: VALUE pairs"));
                        }
                        for (k, vn) in n.entries() {
                            if k.is_empty() || k.contains(['=', '\n']) {
                                return Err(self.entry_error(&vp, k, vn, "not a usable key"));
                            }
                            let val = self.entry_value(&vp, k, vn)?;
                            let val = expand(&val, &self.vars)
                                .map_err(|m| self.entry_error(&vp, k, vn, m))?;
                            values.push((k.clone(), val));
                        }
                    }
                    let value = match self.doc.str(&format!("{it}.value"))? {
                        Some(s) => Some(self.expand(&format!("{it}.value"), &s)?),
                        None => None,
                    };
                    if value.is_some() != values.is_empty() {
                        return Err(self.doc.error(
                            &it,
                            "give either value (the whole file) or values (KEY: VALUE lines)",
                        ));
                    }
                    v.push(SetItem {
                        file: self.root_path(&format!("{it}.file"))?,
                        value,
                        values,
                        mode: parse_mode(self.doc, &format!("{it}.mode"))?,
                    });
                }
                Action::Set(v)
            }
            "remove" => {
                let globs = |path: &str| -> Result<Vec<Glob>> {
                    self.doc
                        .str_list(path)?
                        .iter()
                        .map(|s| {
                            let s = self.expand(path, s)?;
                            Glob::parse(&s).map_err(|e| self.doc.error(path, e.message()))
                        })
                        .collect()
                };
                let paths = globs(&p)?;
                if paths.is_empty() {
                    return Err(self.doc.error(&p, "required: patterns to remove"));
                }
                Action::Remove {
                    paths,
                    keep: globs(&format!("{base}.keep"))?,
                }
            }
            "devices" => {
                let all = || DEVICES.iter().collect::<Vec<_>>();
                let list = match self.doc.node(&p).map(|n| &n.value) {
                    Some(Value::Bool(true)) => all(),
                    Some(Value::Str(s)) if s == "minimal" => all(),
                    Some(Value::Seq(items)) => {
                        let mut v = Vec::new();
                        // YAML reads a bare `null` as nothing: here it is /dev/null
                        let names = items.iter().map(|n| match &n.value {
                            Value::Null => Ok("null".to_string()),
                            Value::Str(s) => Ok(s.clone()),
                            _ => Err(self.doc.error(&p, "expected device names")),
                        });
                        for n in names {
                            let n = n?;
                            match DEVICES.iter().find(|d| d.name == n) {
                                Some(d) => v.push(d),
                                None => {
                                    let names: Vec<&str> = DEVICES.iter().map(|d| d.name).collect();
                                    return Err(self.doc.error(
                                        &p,
                                        format!(
                                            "unknown device {n:?} (known: {})",
                                            names.join(", ")
                                        ),
                                    ));
                                }
                            }
                        }
                        v
                    }
                    _ => {
                        return Err(self
                            .doc
                            .error(&p, "expected true (the minimal set) or a list of names"));
                    }
                };
                Action::Devices(list)
            }
            _ => unreachable!("ACTIONS lists every kind"),
        };
        Ok(Stage {
            name,
            origin: self.doc.origin(node),
            action,
        })
    }

    fn string_list(&self, path: &str) -> Result<Vec<String>> {
        match self.doc.node(path).map(|n| &n.value) {
            Some(Value::Seq(_)) => self.doc.str_list(path),
            _ => Err(self.doc.error(path, "expected a list")),
        }
    }

    // Cmd and Entrypoint: a list (exec form) or a string (run by /bin/sh -c).
    fn command(&self, path: &str) -> Result<Option<Vec<String>>> {
        match self.doc.node(path).map(|n| &n.value) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Seq(_)) => Ok(Some(self.doc.str_list(path)?)),
            Some(_) => Ok(Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                self.doc.str(path)?.unwrap_or_default(),
            ])),
        }
    }

    fn config(&self) -> Result<RunConfig> {
        let mut c = RunConfig::default();
        let Some(node) = self.doc.node("config") else {
            return Ok(c);
        };
        if matches!(node.value, Value::Null) {
            return Ok(c);
        }
        self.reject_unknown("config", node, CONFIG_KEYS)?;
        c.cmd = self.command("config.Cmd")?;
        c.entrypoint = self.command("config.Entrypoint")?;
        if self.doc.node("config.Env").is_some() {
            let env = self.string_list("config.Env")?;
            for e in &env {
                if !e.contains('=') {
                    return Err(self
                        .doc
                        .error("config.Env", format!("{e:?}: expected KEY=VALUE")));
                }
            }
            c.env = Some(env);
        }
        if let Some(n) = self.doc.node("config.Labels") {
            if !matches!(n.value, Value::Map(_)) {
                return Err(self
                    .doc
                    .error("config.Labels", "expected NAME: value pairs"));
            }
            let mut labels = BTreeMap::new();
            // label names have dots: read them as entries, not as dotted paths
            for (k, vn) in n.entries() {
                labels.insert(k.clone(), self.entry_value("config.Labels", k, vn)?);
            }
            c.labels = Some(labels);
        }

        c.working_dir = self.doc.str("config.WorkingDir")?;
        if let Some(w) = &c.working_dir
            && !w.starts_with('/')
        {
            return Err(self
                .doc
                .error("config.WorkingDir", "must be an absolute path"));
        }
        c.user = self.doc.str("config.User")?;
        c.stop_signal = self.doc.str("config.StopSignal")?;
        if self.doc.node("config.ExposedPorts").is_some() {
            let mut ports = BTreeMap::new();
            for p in self.string_list("config.ExposedPorts")? {
                let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(self.doc.error(
                        "config.ExposedPorts",
                        format!("{p:?}: expected PORT[/tcp|udp]"),
                    ));
                }
                ports.insert(format!("{num}/{proto}"), serde_json::json!({}));
            }
            c.exposed_ports = Some(ports);
        }
        if self.doc.node("config.Volumes").is_some() {
            let mut vols = BTreeMap::new();
            for v in self.string_list("config.Volumes")? {
                vols.insert(v, serde_json::json!({}));
            }
            c.volumes = Some(vols);
        }
        Ok(c)
    }

    fn layers(&self, stages: &[Stage], name: &str) -> Result<Vec<Layer>> {
        let Some(node) = self
            .doc
            .node("layers")
            .filter(|n| !matches!(n.value, Value::Null))
        else {
            return Ok(if stages.is_empty() {
                Vec::new()
            } else {
                vec![Layer {
                    name: name.to_string(),
                    stages: 0..stages.len(),
                }]
            });
        };
        if !matches!(node.value, Value::Map(_)) {
            return Err(self
                .doc
                .error("layers", "expected LAYER: [stage, …] entries"));
        }
        let mut layers = Vec::new();
        let mut next = 0;
        for (lname, _) in node.entries() {
            let lp = format!("layers.{lname}");
            let names = self.string_list(&lp)?;
            if names.is_empty() {
                return Err(self.doc.error(&lp, "a layer needs at least one stage"));
            }
            let start = next;
            for (j, s) in names.iter().enumerate() {
                let ip = format!("{lp}.{j}");
                let Some(pos) = stages.iter().position(|st| &st.name == s) else {
                    return Err(self.doc.error(&ip, format!("no stage is named {s:?}")));
                };
                if pos < next {
                    let owner = layers
                        .iter()
                        .find(|l: &&Layer| l.stages.contains(&pos))
                        .map(|l| l.name.as_str())
                        .unwrap_or(lname.as_str());
                    return Err(self
                        .doc
                        .error(&ip, format!("stage {s:?} is already in layer {owner:?}")));
                }
                if pos != next {
                    return Err(self.doc.error(
                        &ip,
                        format!(
                            "layers take the stages in recipe order: {:?} comes next, not {s:?}",
                            stages[next].name
                        ),
                    ));
                }
                next += 1;
            }
            layers.push(Layer {
                name: lname.clone(),
                stages: start..next,
            });
        }
        if next < stages.len() {
            return Err(self.doc.error(
                "layers",
                format!(
                    "stage {:?} is in no layer: every stage belongs to exactly one",
                    stages[next].name
                ),
            ));
        }
        Ok(layers)
    }
}

impl Recipe {
    /// Copy sources that do not exist on this host, as `file:line: path`
    /// messages: checked before a build starts, so a missing site file is not
    /// found after an hour of yum.
    pub fn missing_sources(&self) -> Vec<String> {
        let mut out = Vec::new();
        for st in &self.stages {
            if let Action::Copy(items) = &st.action {
                for it in items {
                    if std::fs::metadata(&it.src).is_err() {
                        out.push(format!(
                            "{}: stage {:?}: copy source {} does not exist",
                            it.origin,
                            st.name,
                            it.src.display()
                        ));
                    }
                }
            }
        }
        out
    }

    /// Read and validate a recipe; `overrides` (`--env KEY=VALUE`) replace the
    /// recipe's variables of the same name, or add new ones.
    pub fn load(file: &Path, overrides: &[(String, String)]) -> Result<Recipe> {
        let doc = Doc::load(file)?;
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Recipe::from_doc(&doc, &dir, overrides)
    }

    pub fn from_doc(doc: &Doc, dir: &Path, overrides: &[(String, String)]) -> Result<Recipe> {
        if !matches!(doc.root.value, Value::Map(_)) {
            return Err(Error::config(format!(
                "{}: a recipe is a map of settings (name:, stages:, …)",
                doc.file
            )));
        }
        for (k, _) in doc.root.entries() {
            if !TOP_KEYS.contains(&k.as_str()) {
                return Err(doc.error(k, format!("unknown key (known: {})", TOP_KEYS.join(", "))));
            }
        }
        let mut vars: Vec<(String, String)> = Vec::new();
        if let Some(n) = doc.node("env") {
            if !matches!(n.value, Value::Map(_) | Value::Null) {
                return Err(doc.error("env", "expected NAME: value pairs"));
            }
            for (k, vn) in n.entries() {
                let fail = |m: &str| Error::config(format!("{}: env.{k}: {m}", doc.origin(vn)));
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(fail("variable names are letters, digits and _"));
                }
                let v = match &vn.value {
                    Value::Null => String::new(),
                    _ => vn
                        .scalar_string()
                        .ok_or_else(|| fail("expected a single value"))?,
                };
                vars.push((k.clone(), v));
            }
        }
        for (k, v) in overrides {
            match vars.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v.clone(),
                None => vars.push((k.clone(), v.clone())),
            }
        }
        let p = Parser { doc, dir, vars };
        let name = p.need_str("name")?;
        let epoch = match doc.node("epoch").map(|n| &n.value) {
            None | Some(Value::Null) => None,
            Some(Value::Int(i)) => Some(*i),
            Some(_) => {
                let s = doc.str("epoch")?.unwrap_or_default();
                Some(crate::util::parse_rfc3339(&s).ok_or_else(|| {
                    doc.error(
                        "epoch",
                        "expected seconds since 1970 or RFC 3339 (2017-03-27T12:00:00Z)",
                    )
                })?)
            }
        };
        let base = doc.str("base")?.filter(|b| !b.trim().is_empty());
        let mut stages = Vec::new();
        match doc.node("stages").map(|n| &n.value) {
            None | Some(Value::Null) => {}
            Some(Value::Seq(v)) => {
                for i in 0..v.len() {
                    let st = p.stage(i)?;
                    if let Some(prev) = stages.iter().find(|s: &&Stage| s.name == st.name) {
                        return Err(doc.error(
                            &format!("stages.{i}.name"),
                            format!(
                                "stage name {:?} is used already at {}",
                                st.name, prev.origin
                            ),
                        ));
                    }
                    stages.push(st);
                }
            }
            Some(_) => return Err(doc.error("stages", "expected a list of stages")),
        }
        let layers = p.layers(&stages, &name)?;
        let config = p.config()?;
        let mut output = Output::default();
        if let Some(n) = doc
            .node("output")
            .filter(|n| !matches!(n.value, Value::Null))
        {
            p.reject_unknown("output", n, OUTPUT_KEYS)?;
            output.tag = doc.str("output.tag")?;
            if let Some(t) = &output.tag {
                crate::reference::Reference::parse(t)
                    .map_err(|e| doc.error("output.tag", e.message()))?;
            }
            output.tar = doc.str("output.tar")?.map(|s| p.host_path(&s));
            output.oci = doc.str("output.oci")?.map(|s| p.host_path(&s));
            output.format = doc
                .str("output.format")?
                .map(|f| Format::parse(&f).map_err(|e| doc.error("output.format", e.message())))
                .transpose()?;
        }
        Ok(Recipe {
            dir: dir.to_path_buf(),
            name,
            base,
            epoch,
            env: p.vars,
            stages,
            layers,
            config,
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Recipe> {
        let doc = Doc::parse("r.yml", text)?;
        Recipe::from_doc(&doc, Path::new("/recipes"), &[])
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const GOOD: &str = r#"name: wn
epoch: 1490616000
env:
  PKGS: condor
  BERTH: /usr/local/bin/berth
stages:
  - name: release
    run: yum --installroot=$ROOT install -y $PKGS
  - name: dumb-init
    copy: {src: "${BERTH}", dest: /usr/bin/dumb-init, mode: "0755", owner: "0:0"}
  - name: users
    append:
      - file: /etc/passwd
        lines: ["t1user:x:5000:5000::/home/t1user:/bin/bash"]
  - name: expunge
    remove: [/usr/share/man, /usr/share/locale/*]
    keep: [/usr/share/locale/en_US*]
  - name: mirror
    set: {file: /etc/yum/vars/t1mirror, value: "http://mirror/$${x}"}
  - name: dev
    devices: true
layers:
  generic: [release, dumb-init]
  site: [users, expunge, mirror, dev]
config:
  Cmd: ["/bin/bash"]
  Entrypoint: /usr/bin/dumb-init
  Labels: {site: TRIUMF, org.opencontainers.image.title: wn}
output:
  tag: sl6:wn
  tar: out/wn.tar.gz
"#;

    #[test]
    fn a_good_recipe() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.name, "wn");
        assert_eq!(r.epoch, Some(1_490_616_000));
        assert_eq!(r.stages.len(), 6);
        assert_eq!(r.stages[1].origin, "r.yml:9");
        let Action::Copy(c) = &r.stages[1].action else {
            panic!()
        };
        assert_eq!(c[0].src, Path::new("/usr/local/bin/berth"));
        assert_eq!(c[0].mode, Some(0o755));
        assert_eq!(c[0].owner, Some((0, 0)));
        let Action::Set(s) = &r.stages[4].action else {
            panic!()
        };
        assert_eq!(s[0].value.as_deref(), Some("http://mirror/${x}"));
        let Action::Devices(d) = &r.stages[5].action else {
            panic!()
        };
        assert_eq!(d.len(), DEVICES.len());
        assert_eq!(r.layers.len(), 2);
        assert_eq!(r.layers[1].stages, 2..6);
        assert_eq!(
            r.config.entrypoint.as_ref().unwrap()[2],
            "/usr/bin/dumb-init"
        );
        let labels = r.config.labels.as_ref().unwrap();
        assert_eq!(labels["org.opencontainers.image.title"], "wn");
        assert_eq!(labels["site"], "TRIUMF");
        assert_eq!(
            r.output.tar.as_deref(),
            Some(Path::new("/recipes/out/wn.tar.gz"))
        );
        // --env overrides a variable before it is used
        let doc = Doc::parse("r.yml", GOOD).unwrap();
        let r = Recipe::from_doc(&doc, Path::new("/"), &[("BERTH".into(), "/b".into())]).unwrap();
        let Action::Copy(c) = &r.stages[1].action else {
            panic!()
        };
        assert_eq!(c[0].src, Path::new("/b"));
    }

    #[test]
    fn keys_with_dots_are_read_as_keys() {
        let r = parse(
            "name: x\nstages:\n  - name: a\n    set:\n      file: /etc/sysctl.conf\n      values: {net.ipv4.ip_forward: 1}\n",
        )
        .unwrap();
        let Action::Set(s) = &r.stages[0].action else {
            panic!()
        };
        assert_eq!(
            s[0].values,
            [("net.ipv4.ip_forward".to_string(), "1".to_string())]
        );
        assert_eq!(
            err("name: x\nenv:\n  a.b: 1\n"),
            "r.yml:3: env.a.b: variable names are letters, digits and _"
        );
    }

    #[test]
    fn without_layers_one_layer_holds_every_stage() {
        let r = parse(
            "name: x\nstages:\n  - {name: a, run: 'true'}\n  - {name: b, devices: [null, fd]}\n",
        )
        .unwrap();
        assert_eq!(r.layers.len(), 1);
        assert_eq!(r.layers[0].name, "x");
        assert_eq!(r.layers[0].stages, 0..2);
    }

    #[test]
    fn errors_name_file_line_and_what() {
        let base = "name: x\nstages:\n  - name: a\n    run: 'true'\n  - name: b\n    run: 'true'\n";
        assert_eq!(
            err(&format!("{base}layers:\n  one: [b, a]\n")),
            "r.yml:8: layers.one.0: layers take the stages in recipe order: \"a\" comes next, not \"b\""
        );
        assert_eq!(
            err(&format!("{base}layers:\n  one: [a]\n")),
            "r.yml:7: layers: stage \"b\" is in no layer: every stage belongs to exactly one"
        );
        assert_eq!(
            err(&format!("{base}layers:\n  one: [a]\n  two: [a, b]\n")),
            "r.yml:9: layers.two.0: stage \"a\" is already in layer \"one\""
        );
        assert_eq!(
            err(&format!("{base}layers:\n  one: [a, c]\n")),
            "r.yml:8: layers.one.1: no stage is named \"c\""
        );
        assert_eq!(
            err("name: x\nstages:\n  - name: a\n    copy: {src: /x, dest: /y, mode: 0755}\n"),
            "r.yml:4: stages.0.copy.mode: write the mode as a quoted octal string, e.g. mode: \"0755\" (YAML reads 0755 as a number)"
        );
        assert_eq!(
            err("name: x\nstages:\n  - name: a\n    remove: [/usr/share/man]\n    kepe: [/x]\n"),
            "r.yml:5: stages.0.kepe: unknown key (known here: name, run, chroot, copy, append, remove, devices, set, keep)"
        );
        assert_eq!(
            err("name: x\nstages:\n  - name: a\n    run: x\n    chroot: y\n"),
            "r.yml:3: stages.0: stage \"a\" has run and chroot: one action per stage"
        );
        assert_eq!(
            err("name: x\nstages:\n  - name: a\n"),
            "r.yml:3: stages.0: stage \"a\" does nothing: give one of run, chroot, copy, append, remove, devices, set"
        );
        assert_eq!(
            err("name: x\nstages:\n  - name: a\n    copy: {src: $NOPE/x, dest: /y}\n"),
            "r.yml:4: stages.0.copy.src: unknown variable $NOPE (define it under env:)"
        );
        assert_eq!(
            err("name: x\nstages:\n  - name: a\n    devices: [null, floppy]\n"),
            "r.yml:4: stages.0.devices: unknown device \"floppy\" (known: null, zero, full, random, urandom, tty, console, ptmx, fd, stdin, stdout, stderr, pts, shm)"
        );
        assert_eq!(
            err("name: x\nstages:\n  - name: a\n    run: 'true'\n  - name: a\n    run: 'false'\n"),
            "r.yml:5: stages.1.name: stage name \"a\" is used already at r.yml:3"
        );
        assert_eq!(
            err("nam: x\n"),
            "r.yml:1: nam: unknown key (known: name, epoch, base, env, stages, layers, config, output)"
        );
        assert_eq!(err("stages: []\n"), "r.yml: name: required");
        assert!(
            err("name: x\nstages:\n  - name: a\n    remove: [/usr/../etc]\n")
                .starts_with("r.yml:4: stages.0.remove: pattern")
        );
    }

    #[test]
    fn expansion() {
        let v = vec![
            ("A".to_string(), "1".to_string()),
            ("B_2".to_string(), "two".to_string()),
        ];
        assert_eq!(expand("$A/${B_2}-$$A-$", &v).unwrap(), "1/two-$A-$");
        assert!(expand("${C}", &v).unwrap_err().contains("$C"));
        assert!(expand("${A", &v).is_err());
    }
}
