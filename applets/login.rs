//! `login [SERVER]` / `logout [SERVER]`: check credentials against a registry and
//! keep them in docker's config.json (0600), as `docker login` does.

use argh::FromArgs;
use berth::error::{Error, Result};
use berth::registry::{Registry, Settings};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(FromArgs)]
/// Log in to a registry; credentials go to ~/.docker/config.json (or $DOCKER_CONFIG).
struct Args {
    /// user name
    #[argh(option, short = 'u')]
    username: Option<String>,
    /// password (visible to other users in ps: prefer --password-stdin)
    #[argh(option, short = 'p')]
    password: Option<String>,
    /// read the password from stdin
    #[argh(switch)]
    password_stdin: bool,
    /// client settings file (default /etc/berth/client.yml or BERTH_CLIENT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// registry allowed over HTTP or unverified TLS (repeatable)
    #[argh(option)]
    insecure_registry: Vec<String>,
    /// registry HOST[:PORT] (default: the first search registry, else docker.io)
    #[argh(positional)]
    server: Option<String>,
}

fn host_of(server: Option<&str>, settings: &Settings) -> String {
    match server {
        Some(s) => berth::registry::settings::server_host(s),
        None => settings
            .search
            .first()
            .cloned()
            .unwrap_or_else(|| "docker.io".into()),
    }
}

pub fn login(name: &str, args: &[String]) -> Result<u8> {
    let a: Args = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_cli();
    let settings =
        Settings::load(a.config.as_deref())?.with_flags(&[], &[], &a.insecure_registry)?;
    let host = host_of(a.server.as_deref(), &settings);
    let user = match a.username {
        Some(u) => u,
        None => berth::util::prompt("Username: ", false)?,
    };
    let pass = match (a.password, a.password_stdin) {
        (Some(_), true) => {
            return Err(Error::usage(
                "--password and --password-stdin are mutually exclusive",
            ));
        }
        (Some(p), false) => p,
        (None, true) => {
            let mut l = String::new();
            std::io::stdin().lock().read_line(&mut l)?;
            l.trim_end_matches(['\r', '\n']).to_string()
        }
        (None, false) => berth::util::prompt("Password: ", true)?,
    };
    if user.is_empty() || pass.is_empty() {
        return Err(Error::usage("user name and password must not be empty"));
    }
    Registry::new(&host, &settings)?
        .with_credentials(&user, &pass)
        .ping()?;
    let path = berth::auth::dockercfg::store(&host, &user, &pass)?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    println!("Login Succeeded");
    Ok(0)
}

#[derive(FromArgs)]
/// Remove stored credentials for a registry.
struct LogoutArgs {
    /// client settings file (default /etc/berth/client.yml or BERTH_CLIENT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// registry HOST[:PORT] (default: the first search registry, else docker.io)
    #[argh(positional)]
    server: Option<String>,
}

pub fn logout(name: &str, args: &[String]) -> Result<u8> {
    let a: LogoutArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let settings = Settings::load(a.config.as_deref())?;
    let host = host_of(a.server.as_deref(), &settings);
    if berth::auth::dockercfg::remove(&host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(0)
}
