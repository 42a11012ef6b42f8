//! init's command line and environment, parsed the way dumb-init's getopt_long
//! ("+hvVcr:") does, so every command line written for dumb-init means the same
//! here: options end at the first non-option or `--`, short options combine
//! (`-cv`, `-r15:3`), long options take `=VALUE` or the next word and may be
//! shortened to a unique prefix. berth's additions (tini's `-s -e -w`,
//! `--wait-all`, the hostname options) are matched only when no dumb-init option
//! is, so a prefix that was unique for dumb-init stays so.
//!
//! Arguments are `OsString`s: the command and its arguments reach `execvp`
//! byte for byte, even when they are not UTF-8.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// dumb-init rewrites only the classic signals (1..=31).
pub const MAXSIG: usize = 31;

/// How the hostname is set before the child starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostname {
    /// The name as DNS gives it (the site's script does this).
    Fqdn,
    /// Its first label.
    Short,
}

/// Everything init needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Opts {
    /// dumb-init's default: the child leads a new session, signals go to its group.
    pub setsid: bool,
    /// Signal rewrites, indexed by signal number; -1 = unchanged, 0 = drop.
    pub rewrite: [i32; MAXSIG + 1],
    pub verbose: bool,
    pub subreaper: bool,
    pub warn_on_reap: bool,
    /// Exit codes of the child that init reports as 0 (tini's -e), as a bitset.
    pub expect: [u64; 4],
    /// `--wait-all`: the grace between SIGTERM and SIGKILL for what remains.
    pub wait_all: Option<Duration>,
    pub hostname: Option<Hostname>,
    pub dns_timeout: Duration,
    pub command: Vec<OsString>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            setsid: true,
            rewrite: [-1; MAXSIG + 1],
            verbose: false,
            subreaper: false,
            warn_on_reap: false,
            expect: [0; 4],
            wait_all: None,
            hostname: None,
            dns_timeout: DEFAULT_DNS_TIMEOUT,
            command: Vec::new(),
        }
    }
}

impl Opts {
    pub fn expects(&self, code: u8) -> bool {
        self.expect[code as usize / 64] & (1 << (code % 64)) != 0
    }
    fn expect_code(&mut self, code: u8) {
        self.expect[code as usize / 64] |= 1 << (code % 64);
    }
}

pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Shorter than `docker stop`'s 10 s, so init's own SIGKILL comes first and the
/// container still exits with the main child's status.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Why parsing stopped without something to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Help,
    Version,
    /// A message for stderr (already complete, with newline); exit 1 as dumb-init.
    Error(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Has {
    No,
    Required,
    /// Only as `--name=VALUE` (getopt's optional_argument).
    Optional,
}

struct LongOpt {
    name: &'static str,
    has: Has,
    key: Key,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Help,
    SingleChild,
    Rewrite,
    Verbose,
    Version,
    Subreaper,
    WarnOnReap,
    Expect,
    WaitAll,
    HostnameFromDns,
    HostnameShort,
    DnsTimeout,
}

const DUMB_INIT_LONG: &[LongOpt] = &[
    LongOpt {
        name: "help",
        has: Has::No,
        key: Key::Help,
    },
    LongOpt {
        name: "single-child",
        has: Has::No,
        key: Key::SingleChild,
    },
    LongOpt {
        name: "rewrite",
        has: Has::Required,
        key: Key::Rewrite,
    },
    LongOpt {
        name: "verbose",
        has: Has::No,
        key: Key::Verbose,
    },
    LongOpt {
        name: "version",
        has: Has::No,
        key: Key::Version,
    },
];

const BERTH_LONG: &[LongOpt] = &[
    LongOpt {
        name: "subreaper",
        has: Has::No,
        key: Key::Subreaper,
    },
    LongOpt {
        name: "warn-on-reap",
        has: Has::No,
        key: Key::WarnOnReap,
    },
    LongOpt {
        name: "expect-exit",
        has: Has::Required,
        key: Key::Expect,
    },
    LongOpt {
        name: "wait-all",
        has: Has::Optional,
        key: Key::WaitAll,
    },
    LongOpt {
        name: "hostname-from-dns",
        has: Has::No,
        key: Key::HostnameFromDns,
    },
    LongOpt {
        name: "hostname-short",
        has: Has::No,
        key: Key::HostnameShort,
    },
    LongOpt {
        name: "dns-timeout",
        has: Has::Required,
        key: Key::DnsTimeout,
    },
];

fn short(c: u8) -> Option<(Key, bool)> {
    Some(match c {
        b'h' => (Key::Help, false),
        b'c' => (Key::SingleChild, false),
        b'r' => (Key::Rewrite, true),
        b'v' => (Key::Verbose, false),
        b'V' => (Key::Version, false),
        b's' => (Key::Subreaper, false),
        b'w' => (Key::WarnOnReap, false),
        b'e' => (Key::Expect, true),
        _ => return None,
    })
}

/// Find a long option by exact name or unique prefix: dumb-init's own first.
fn lookup_long(name: &str) -> Result<&'static LongOpt, String> {
    for table in [DUMB_INIT_LONG, BERTH_LONG] {
        if let Some(o) = table.iter().find(|o| o.name == name) {
            return Ok(o);
        }
        let hits: Vec<&LongOpt> = table.iter().filter(|o| o.name.starts_with(name)).collect();
        match hits.len() {
            0 => continue,
            1 => return Ok(hits[0]),
            _ => {
                let names: Vec<String> = hits.iter().map(|o| format!("'--{}'", o.name)).collect();
                return Err(format!(
                    "option '--{name}' is ambiguous; possibilities: {}",
                    names.join(" ")
                ));
            }
        }
    }
    Err(format!("unrecognized option '--{name}'"))
}

/// Parse the command line (without argv[0]). `name` is how init was invoked, for
/// messages.
pub fn parse(name: &str, args: &[OsString]) -> Result<Opts, Stop> {
    let mut o = Opts::default();
    let mut i = 0;
    let err = |m: String| Stop::Error(format!("{name}: {m}\n"));
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--" {
            i += 1;
            break;
        }
        if a.len() < 2 || a[0] != b'-' {
            break;
        }
        if let Some(long) = a.strip_prefix(b"--") {
            let (n, inline) = match long.iter().position(|&b| b == b'=') {
                Some(p) => (&long[..p], Some(&long[p + 1..])),
                None => (long, None),
            };
            let n = String::from_utf8_lossy(n);
            let opt = lookup_long(&n).map_err(err)?;
            let value: Option<&[u8]> = match (opt.has, inline) {
                (Has::No, Some(_)) => {
                    return Err(err(format!(
                        "option '--{}' doesn't allow an argument",
                        opt.name
                    )));
                }
                (Has::No, None) | (Has::Optional, None) => None,
                (_, Some(v)) => Some(v),
                (Has::Required, None) => {
                    i += 1;
                    match args.get(i) {
                        Some(v) => Some(v.as_bytes()),
                        None => {
                            return Err(err(format!(
                                "option '--{}' requires an argument",
                                opt.name
                            )));
                        }
                    }
                }
            };
            apply(name, &mut o, opt.key, value)?;
            i += 1;
            continue;
        }
        // A cluster of short options: -cv, -r15:3, -vr 15:3.
        let mut j = 1;
        while j < a.len() {
            let c = a[j];
            let Some((key, takes)) = short(c) else {
                return Err(err(format!("invalid option -- '{}'", c as char)));
            };
            if !takes {
                apply(name, &mut o, key, None)?;
                j += 1;
                continue;
            }
            let value = if j + 1 < a.len() {
                &a[j + 1..]
            } else {
                i += 1;
                match args.get(i) {
                    Some(v) => v.as_bytes(),
                    None => {
                        return Err(err(format!(
                            "option requires an argument -- '{}'",
                            c as char
                        )));
                    }
                }
            };
            apply(name, &mut o, key, Some(value))?;
            break;
        }
        i += 1;
    }
    if i >= args.len() {
        return Err(Stop::Error(format!(
            "Usage: {name} [option] program [args]\nTry {name} --help for full usage.\n"
        )));
    }
    o.command = args[i..].to_vec();
    Ok(o)
}

fn apply(name: &str, o: &mut Opts, key: Key, value: Option<&[u8]>) -> Result<(), Stop> {
    let v = || String::from_utf8_lossy(value.unwrap_or_default()).into_owned();
    match key {
        Key::Help => return Err(Stop::Help),
        Key::Version => return Err(Stop::Version),
        Key::SingleChild => o.setsid = false,
        Key::Verbose => o.verbose = true,
        Key::Rewrite => {
            let (s, r) = parse_rewrite(&v()).ok_or_else(|| Stop::Error(rewrite_help()))?;
            o.rewrite[s] = r;
        }
        Key::Subreaper => o.subreaper = true,
        Key::WarnOnReap => o.warn_on_reap = true,
        Key::Expect => match v().trim().parse::<u8>() {
            Ok(c) => o.expect_code(c),
            Err(_) => {
                return Err(Stop::Error(format!(
                    "{name}: -e: not an exit code (0-255): {}\n",
                    v()
                )));
            }
        },
        Key::WaitAll => {
            o.wait_all = Some(match value {
                None => DEFAULT_GRACE,
                Some(_) => seconds(&v()).ok_or_else(|| {
                    Stop::Error(format!(
                        "{name}: --wait-all: not a number of seconds: {}\n",
                        v()
                    ))
                })?,
            })
        }
        Key::HostnameFromDns => {
            o.hostname.get_or_insert(Hostname::Fqdn);
        }
        Key::HostnameShort => o.hostname = Some(Hostname::Short),
        Key::DnsTimeout => {
            o.dns_timeout = seconds(&v()).filter(|d| !d.is_zero()).ok_or_else(|| {
                Stop::Error(format!(
                    "{name}: --dns-timeout: not a positive number of seconds: {}\n",
                    v()
                ))
            })?
        }
    }
    Ok(())
}

/// The environment dumb-init reads, and berth's own variables, applied after the
/// command line as dumb-init does. Returns notes for the debug log and warnings.
pub fn apply_env(
    name: &str,
    o: &mut Opts,
    env: impl Fn(&str) -> Option<OsString>,
) -> (Vec<&'static str>, Vec<String>) {
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let is = |k: &str, v: &str| env(k).is_some_and(|x| x == OsStr::new(v));
    if is("DUMB_INIT_DEBUG", "1") {
        o.verbose = true;
        notes.push("Running in debug mode.");
    }
    if is("DUMB_INIT_SETSID", "0") {
        o.setsid = false;
        notes.push("Not running in setsid mode.");
    }
    if o.setsid {
        // A process group orphaned by its session leader ignores the default
        // stop of TSTP/TTIN/TTOU, so dumb-init sends SIGSTOP unless told otherwise.
        for s in [libc::SIGTSTP, libc::SIGTTOU, libc::SIGTTIN] {
            if o.rewrite[s as usize] == -1 {
                o.rewrite[s as usize] = libc::SIGSTOP;
            }
        }
    }
    if let Some(h) = env("BERTH_INIT_HOSTNAME") {
        match h.to_str() {
            Some("dns") => {
                o.hostname.get_or_insert(Hostname::Fqdn);
            }
            Some("dns-short") => o.hostname = Some(Hostname::Short),
            Some("" | "none") => {}
            _ => warnings.push(format!(
                "{name}: BERTH_INIT_HOSTNAME={} not understood (dns or dns-short); hostname left alone",
                h.to_string_lossy()
            )),
        }
    }
    if let Some(t) = env("BERTH_INIT_DNS_TIMEOUT") {
        match seconds(&t.to_string_lossy()).filter(|d| !d.is_zero()) {
            Some(d) => o.dns_timeout = d,
            None => warnings.push(format!(
                "{name}: BERTH_INIT_DNS_TIMEOUT={} is not a number of seconds; using {} s",
                t.to_string_lossy(),
                o.dns_timeout.as_secs_f64()
            )),
        }
    }
    (notes, warnings)
}

/// `S:R` as dumb-init reads it (`sscanf("%d:%d")`): S in 1..=31, R in 0..=31.
fn parse_rewrite(s: &str) -> Option<(usize, i32)> {
    let (a, rest) = c_int(s)?;
    let (b, _) = c_int(rest.strip_prefix(':')?)?;
    let ok = (1..=MAXSIG as i64).contains(&a) && (0..=MAXSIG as i64).contains(&b);
    ok.then_some((a as usize, b as i32))
}

/// A `%d` conversion: leading blanks, a sign, digits; the rest is returned.
fn c_int(s: &str) -> Option<(i64, &str)> {
    let t = s.trim_start();
    let digits_at = usize::from(t.starts_with(['+', '-']));
    let end = digits_at
        + t[digits_at..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
    if end == digits_at {
        return None;
    }
    Some((t[..end].parse().ok()?, &t[end..]))
}

/// Seconds as a decimal number, with an optional `s`.
fn seconds(s: &str) -> Option<Duration> {
    let t = s.trim();
    let t = t.strip_suffix('s').unwrap_or(t);
    let f: f64 = t.parse().ok()?;
    (f.is_finite() && (0.0..1e9).contains(&f)).then(|| Duration::from_secs_f64(f))
}

pub fn rewrite_help() -> String {
    format!(
        "Usage: -r option takes <signum>:<signum>, where <signum> is between 1 and {MAXSIG}.\n\
         This option can be specified multiple times.\n\
         Use --help for full usage.\n"
    )
}

pub fn help(name: &str) -> String {
    format!(
        "{name} (berth {ver}), dumb-init {DUMB_INIT_VERSION} compatible\n\
Usage: {name} [option] command [[arg] ...]\n\
\n\
A simple process supervisor that forwards signals to children and reaps zombies.\n\
It is designed to run as PID 1 in minimal container environments.\n\
\n\
Optional arguments (dumb-init):\n\
   -c, --single-child   Run in single-child mode.\n\
                        In this mode, signals are only proxied to the\n\
                        direct child and not any of its descendants.\n\
   -r, --rewrite s:r    Rewrite received signal s to new signal r before proxying.\n\
                        To ignore (not proxy) a signal, rewrite it to 0.\n\
                        This option can be specified multiple times.\n\
   -v, --verbose        Print debugging information to stderr.\n\
   -h, --help           Print this help message and exit.\n\
   -V, --version        Print the current version and exit.\n\
\n\
Optional arguments (tini):\n\
   -s, --subreaper      Register as a child subreaper when not PID 1, so orphaned\n\
                        descendants are reaped here.\n\
   -e, --expect-exit N  Exit 0 when the child exits with N (0-255; repeatable).\n\
   -w, --warn-on-reap   Warn when an orphaned process is reaped.\n\
\n\
Optional arguments (berth):\n\
   --wait-all[=GRACE]   When the child exits, SIGTERM every remaining descendant,\n\
                        wait until all are gone and SIGKILL what is left after\n\
                        GRACE seconds (default {grace}). Implies --subreaper.\n\
   --hostname-from-dns  Before starting the child, set the hostname to the\n\
                        reverse-DNS name of the address the kernel would use to\n\
                        reach the outside (like `ip -4 route get 1`).\n\
   --hostname-short     The same, with only the first label of the name.\n\
   --dns-timeout SECS   Give up the lookup after SECS (default {dns}); the child\n\
                        starts anyway.\n\
\n\
Environment: DUMB_INIT_SETSID=0 (as -c), DUMB_INIT_DEBUG=1 (as -v),\n\
BERTH_INIT_HOSTNAME=dns|dns-short, BERTH_INIT_DNS_TIMEOUT=SECS.\n",
        ver = berth::VERSION,
        grace = DEFAULT_GRACE.as_secs(),
        dns = DEFAULT_DNS_TIMEOUT.as_secs(),
    )
}

/// The dumb-init release whose behaviour and options this applet follows.
pub const DUMB_INIT_VERSION: &str = "1.2.5";

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Opts, Stop> {
        let a: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse("dumb-init", &a)
    }
    fn cmd(o: &Opts) -> Vec<&str> {
        o.command.iter().map(|s| s.to_str().unwrap()).collect()
    }
    fn error(r: Result<Opts, Stop>) -> String {
        match r {
            Err(Stop::Error(m)) => m,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn options_stop_at_the_first_non_option_and_after_double_dash() {
        let o = p(&["-c", "sh", "-c", "echo -v"]).unwrap();
        assert!(!o.setsid && !o.verbose);
        assert_eq!(cmd(&o), ["sh", "-c", "echo -v"]);
        let o = p(&["--", "-v", "x"]).unwrap();
        assert!(!o.verbose);
        assert_eq!(cmd(&o), ["-v", "x"]);
        // a lone "-" is a command, as for getopt
        assert_eq!(cmd(&p(&["-", "a"]).unwrap()), ["-", "a"]);
        assert!(p(&["/bin/bash"]).unwrap().setsid);
    }

    #[test]
    fn short_options_combine_and_take_values_attached_or_next() {
        let o = p(&["-cv", "-r15:3", "-r", "2:0", "-vr", "10:12", "x"]).unwrap();
        assert!(!o.setsid && o.verbose);
        assert_eq!(o.rewrite[15], 3);
        assert_eq!(o.rewrite[2], 0);
        assert_eq!(o.rewrite[10], 12);
        let o = p(&["-swe143", "-e", "3", "x"]).unwrap();
        assert!(o.subreaper && o.warn_on_reap && o.expects(143) && o.expects(3));
        assert!(!o.expects(0) && !o.expects(255));
    }

    #[test]
    fn long_options_take_equals_or_next_word_and_unique_prefixes() {
        let o = p(&[
            "--rewrite=15:3",
            "--rewrite",
            "1:0",
            "--single",
            "--verb",
            "x",
        ])
        .unwrap();
        assert_eq!((o.rewrite[15], o.rewrite[1]), (3, 0));
        assert!(!o.setsid && o.verbose);
        // a prefix that was unique for dumb-init stays dumb-init's
        assert!(!p(&["--s", "x"]).unwrap().setsid);
        assert_eq!(p(&["--h", "x"]).unwrap_err(), Stop::Help);
        assert_eq!(p(&["--version"]).unwrap_err(), Stop::Version);
        assert!(error(p(&["--ver", "x"])).contains("is ambiguous"));
        assert_eq!(
            error(p(&["--frob", "x"])),
            "dumb-init: unrecognized option '--frob'\n"
        );
        assert_eq!(
            error(p(&["--verbose=1", "x"])),
            "dumb-init: option '--verbose' doesn't allow an argument\n"
        );
        assert_eq!(
            error(p(&["--rewrite"])),
            "dumb-init: option '--rewrite' requires an argument\n"
        );
        assert_eq!(error(p(&["-x", "y"])), "dumb-init: invalid option -- 'x'\n");
        assert_eq!(
            error(p(&["-r"])),
            "dumb-init: option requires an argument -- 'r'\n"
        );
    }

    #[test]
    fn rewrite_values_follow_sscanf_and_dumb_init_ranges() {
        assert_eq!(parse_rewrite("15:3"), Some((15, 3)));
        assert_eq!(parse_rewrite(" 15: 3trailing"), Some((15, 3)));
        assert_eq!(parse_rewrite("31:0"), Some((31, 0)));
        for bad in ["0:1", "32:1", "1:32", "1:-1", "15", "15 :3", "a:b", ""] {
            assert_eq!(parse_rewrite(bad), None, "{bad}");
        }
        assert!(error(p(&["-r", "99:1", "x"])).starts_with("Usage: -r option takes"));
    }

    #[test]
    fn berth_options_and_their_values() {
        let o = p(&["--wait-all", "x"]).unwrap();
        assert_eq!(o.wait_all, Some(DEFAULT_GRACE));
        // an optional value only binds with '='
        let o = p(&["--wait-all", "3", "x"]).unwrap();
        assert_eq!((o.wait_all, cmd(&o)), (Some(DEFAULT_GRACE), vec!["3", "x"]));
        let o = p(&[
            "--wait-all=0.5",
            "--dns-timeout",
            "1.5s",
            "--hostname-from-dns",
            "x",
        ])
        .unwrap();
        assert_eq!(o.wait_all, Some(Duration::from_millis(500)));
        assert_eq!(o.dns_timeout, Duration::from_millis(1500));
        assert_eq!(o.hostname, Some(Hostname::Fqdn));
        let o = p(&["--hostname-short", "--hostname-from-dns", "x"]).unwrap();
        assert_eq!(o.hostname, Some(Hostname::Short));
        assert!(error(p(&["--dns-timeout=0", "x"])).contains("positive number"));
        assert!(error(p(&["--wait-all=soon", "x"])).contains("--wait-all"));
        assert!(error(p(&["-e", "256", "x"])).contains("0-255"));
        assert!(error(p(&["-v"])).starts_with("Usage: dumb-init [option] program"));
    }

    #[test]
    fn environment_follows_dumb_init_then_berth() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let mut o = p(&["x"]).unwrap();
        let (notes, warns) = apply_env("init", &mut o, env(&[]));
        assert!(notes.is_empty() && warns.is_empty());
        // setsid mode turns the job-control signals into SIGSTOP unless rewritten
        assert_eq!(o.rewrite[libc::SIGTSTP as usize], libc::SIGSTOP);
        assert_eq!(o.rewrite[libc::SIGTTIN as usize], libc::SIGSTOP);
        let mut o = p(&["-r", "20:20", "x"]).unwrap();
        apply_env("init", &mut o, env(&[]));
        assert_eq!(o.rewrite[20], 20);
        let mut o = p(&["x"]).unwrap();
        let (notes, _) = apply_env(
            "init",
            &mut o,
            env(&[
                ("DUMB_INIT_SETSID", "0"),
                ("DUMB_INIT_DEBUG", "1"),
                ("BERTH_INIT_HOSTNAME", "dns-short"),
                ("BERTH_INIT_DNS_TIMEOUT", "0.25"),
            ]),
        );
        assert_eq!(notes.len(), 2);
        assert!(!o.setsid && o.verbose);
        assert_eq!(o.rewrite[libc::SIGTSTP as usize], -1);
        assert_eq!(o.hostname, Some(Hostname::Short));
        assert_eq!(o.dns_timeout, Duration::from_millis(250));
        let mut o = p(&["x"]).unwrap();
        let (_, warns) = apply_env(
            "init",
            &mut o,
            env(&[("DUMB_INIT_SETSID", "no"), ("BERTH_INIT_HOSTNAME", "ldap")]),
        );
        assert!(o.setsid && o.hostname.is_none());
        assert_eq!(warns.len(), 1);
    }

    #[test]
    fn command_bytes_pass_through_untouched() {
        let raw = OsString::from(OsStr::from_bytes(b"caf\xe9"));
        let o = parse("init", &[OsString::from("-v"), raw.clone()]).unwrap();
        assert_eq!(o.command, vec![raw]);
    }
}
