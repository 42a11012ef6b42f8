//! The one error type of the core.
//!
//! Every failure carries a [`Kind`] (which decides the process exit code and, in the
//! registry, the HTTP status), a human message that already says what to do, and an
//! optional cause. Applets return `Result<(), Error>`; `main` turns it into one line on
//! stderr and an exit code, so no applet has to format errors itself.

use std::fmt;
use std::io;

/// What went wrong, coarsely: enough to pick an exit code or an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line.
    Usage,
    /// Bad configuration file or value.
    Config,
    /// Input that does not parse or breaks a rule (manifest, tarball, reference…).
    Invalid,
    /// Content whose digest does not match what was promised.
    Digest,
    /// A thing that does not exist.
    NotFound,
    /// Missing or wrong credentials.
    Auth,
    /// Not allowed (permissions, policy, blocked registry).
    Denied,
    /// A conflicting state (exists already, in use).
    Conflict,
    /// Network or remote peer failure.
    Network,
    /// TLS setup or verification failure.
    Tls,
    /// Local I/O failure.
    Io,
    /// Operation the target does not support.
    Unsupported,
    /// A bug or an impossible state.
    Internal,
}

impl Kind {
    /// Exit code for a process that fails with this kind. 2 is reserved for
    /// "you asked wrongly" (usage, config), as in most Unix tools.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Usage | Kind::Config => 2,
            _ => 1,
        }
    }
}

/// The core's error: a kind, a message and an optional cause.
pub struct Error {
    kind: Kind,
    msg: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// The I/O error kind when the message was taken from an io::Error.
    io_kind: Option<io::ErrorKind>,
}

/// The core's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
            source: None,
            io_kind: None,
        }
    }

    pub fn with_source(
        kind: Kind,
        msg: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            msg: msg.into(),
            source: Some(Box::new(source)),
            io_kind: None,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.msg
    }

    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// Prefix the message with more context, keeping kind and cause.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// True when the underlying cause is a closed pipe (a reader that went away,
    /// such as `berth images | head`): callers treat that as success.
    pub fn is_broken_pipe(&self) -> bool {
        self.io_kind == Some(io::ErrorKind::BrokenPipe)
            || self
                .source
                .as_ref()
                .and_then(|s| s.downcast_ref::<io::Error>())
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(Kind::Usage, msg)
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(Kind::Config, msg)
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Kind::Internal, msg)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|s| s.as_ref() as _)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => Kind::NotFound,
            io::ErrorKind::PermissionDenied => Kind::Denied,
            io::ErrorKind::AlreadyExists => Kind::Conflict,
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => Kind::Invalid,
            _ => Kind::Io,
        };
        Error {
            kind,
            msg: strip_os_suffix(&e.to_string()),
            source: None,
            io_kind: Some(e.kind()),
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::from(io::Error::from(e))
    }
}

fn strip_os_suffix(s: &str) -> String {
    // "No such file or directory (os error 2)" reads better without the number.
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Attach context to any fallible result, converting into [`Error`].
pub trait Context<T> {
    fn context(self, ctx: impl fmt::Display) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(ctx))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds_and_read_cleanly() {
        let e: Error = io::Error::from(io::ErrorKind::NotFound).into();
        assert_eq!(e.kind(), Kind::NotFound);
        let e = Err::<(), _>(io::Error::from_raw_os_error(2))
            .context("/etc/x.yml")
            .unwrap_err();
        assert_eq!(e.to_string(), "/etc/x.yml: No such file or directory");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let e = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing")
            .unwrap_err();
        assert!(e.is_broken_pipe());
        assert!(!Error::usage("x").is_broken_pipe());
        assert_eq!(Error::config("bad").exit_code(), 2);
    }
}
