//! `htpasswd [-c] [-D] FILE USER`: write bcrypt entries the way `htpasswd -B` does,
//! so an air-gapped registry host needs no Apache tools. The password comes from a
//! prompt on a terminal (asked twice, not echoed) or from the first line of stdin.

use argh::FromArgs;
use berth::error::{Error, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(FromArgs)]
/// Add, change or delete a bcrypt user in an htpasswd file (registryd's auth.htpasswd.path).
struct Args {
    /// create the file, replacing any existing one
    #[argh(switch, short = 'c')]
    create: bool,
    /// delete the user instead of setting a password
    #[argh(switch, short = 'D')]
    delete: bool,
    /// bcrypt (the only format; accepted for compatibility with htpasswd -B)
    #[argh(switch, short = 'B')]
    _bcrypt: bool,
    /// read the password from stdin even on a terminal
    #[argh(switch, short = 'i')]
    stdin: bool,
    /// the htpasswd file
    #[argh(positional)]
    file: PathBuf,
    /// the user name
    #[argh(positional)]
    user: String,
}

fn password(from_stdin: bool) -> Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            return Err(Error::usage("no password on stdin"));
        }
        return Ok(p);
    }
    let a = berth::util::prompt("New password: ", true)?;
    let b = berth::util::prompt("Re-type new password: ", true)?;
    if a != b {
        return Err(Error::usage("password verification error"));
    }
    if a.is_empty() {
        return Err(Error::usage("empty password"));
    }
    Ok(a)
}

fn write(path: &Path, lines: &[String]) -> Result<()> {
    // Keep the mode an admin chose (the site uses 0400); new files are 0600.
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    berth::fsutil::atomic_write_mode(path, text.as_bytes(), mode)
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let a: Args = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let existing = if a.create {
        String::new()
    } else {
        match std::fs::read_to_string(&a.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "{}: no such file; use -c to create it",
                    a.file.display()
                )));
            }
            Err(e) => return Err(Error::from(e).context(a.file.display())),
        }
    };
    let prefix = format!("{}:", a.user);
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    let pos = lines.iter().position(|l| l.starts_with(&prefix));
    let mut err = std::io::stderr();
    if a.delete {
        let Some(i) = pos else {
            return Err(Error::not_found(format!(
                "user {} not found in {}",
                a.user,
                a.file.display()
            )));
        };
        lines.remove(i);
        write(&a.file, &lines)?;
        writeln!(err, "Deleting password for user {}", a.user)?;
        return Ok(0);
    }
    let entry = berth::auth::htpasswd::entry(&a.user, &password(a.stdin)?)?;
    match pos {
        Some(i) => {
            lines[i] = entry;
            writeln!(err, "Updating password for user {}", a.user)?;
        }
        None => {
            lines.push(entry);
            writeln!(err, "Adding password for user {}", a.user)?;
        }
    }
    write(&a.file, &lines)?;
    Ok(0)
}
