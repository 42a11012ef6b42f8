//! Name the container after its address, as the site's launch script did with
//! `ip -4 route get 1`, `host` and `hostname`: the kernel's outbound source
//! address, reverse-resolved by the system resolver, becomes the hostname before
//! the child starts. Failing is never fatal: the caller logs one line and starts
//! the child anyway.

use super::args::Hostname;
use berth::error::{Error, Kind, Result};
use berth::sys::{self, Op, Sys};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The kernel's limit for sethostname (HOST_NAME_MAX).
const MAX_LEN: usize = 64;

/// The outbound address and the name the resolver gives it, within `timeout`.
pub fn discover(timeout: Duration) -> Result<(Ipv4Addr, String)> {
    let ip = berth::net::outbound_ipv4()?;
    let name = berth::net::reverse_lookup(ip.into(), timeout)?;
    Ok((ip, name))
}

/// The hostname to set for a name DNS gave.
pub fn choose(found: &str, form: Hostname) -> Result<String> {
    let fqdn = found.trim_end_matches('.');
    let name = match form {
        Hostname::Fqdn => fqdn,
        Hostname::Short => fqdn.split('.').next().unwrap_or_default(),
    };
    let bad = |why: &str| Error::new(Kind::Invalid, format!("name {found:?} {why}"));
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > MAX_LEN {
        return Err(bad(&format!(
            "is longer than the kernel's {MAX_LEN} bytes (try --hostname-short)"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(bad("is not a host name"));
    }
    Ok(name.to_string())
}

/// Find the name with `discover` and set it through the Sys seam. Gives the name
/// and the address it belongs to.
pub fn set(
    sys: &dyn Sys,
    form: Hostname,
    discover: impl FnOnce() -> Result<(Ipv4Addr, String)>,
) -> Result<(String, Ipv4Addr)> {
    let (ip, found) = discover()?;
    let name = choose(&found, form).map_err(|e| e.context(format!("reverse DNS of {ip}")))?;
    sys::apply(sys, &[Op::SetHostname(name.clone())])?;
    Ok((name, ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth::sys::Recorder;

    fn found(name: &'static str) -> impl FnOnce() -> Result<(Ipv4Addr, String)> {
        move || Ok((Ipv4Addr::new(10, 0, 3, 17), name.to_string()))
    }

    #[test]
    fn the_name_dns_gives_becomes_the_hostname() {
        let r = Recorder::new();
        let (n, ip) = set(&r, Hostname::Fqdn, found("vn0317.triumf.ca.")).unwrap();
        assert_eq!(
            (n.as_str(), ip.to_string().as_str()),
            ("vn0317.triumf.ca", "10.0.3.17")
        );
        assert_eq!(r.taken(), vec![Op::SetHostname("vn0317.triumf.ca".into())]);
        let r = Recorder::new();
        set(&r, Hostname::Short, found("vn0317.triumf.ca")).unwrap();
        assert_eq!(r.taken(), vec![Op::SetHostname("vn0317".into())]);
    }

    #[test]
    fn no_name_or_a_bad_name_sets_nothing() {
        let r = Recorder::new();
        let e = set(&r, Hostname::Fqdn, || {
            Err(Error::new(
                Kind::Network,
                "no answer for 10.0.3.17 within 2 s",
            ))
        })
        .unwrap_err();
        assert!(e.to_string().contains("no answer"));
        assert!(r.taken().is_empty());
        let long = "a".repeat(40) + "." + &"b".repeat(40);
        let long: &'static str = Box::leak(long.into_boxed_str());
        let e = set(&r, Hostname::Fqdn, found(long)).unwrap_err();
        assert!(e.to_string().contains("--hostname-short"), "{e}");
        assert!(r.taken().is_empty());
        // the short form of the same name fits
        set(&r, Hostname::Short, found(long)).unwrap();
        assert_eq!(r.taken(), vec![Op::SetHostname("a".repeat(40))]);
        for bad in [".", "a b.example", "x;rm"] {
            assert!(choose(bad, Hostname::Fqdn).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refused_sethostname_is_reported_not_retried() {
        let r = Recorder::failing_at(0);
        let e = set(&r, Hostname::Fqdn, found("vn0317.triumf.ca")).unwrap_err();
        assert!(
            e.to_string().contains("sethostname vn0317.triumf.ca"),
            "{e}"
        );
        assert!(r.taken().is_empty());
    }
}
