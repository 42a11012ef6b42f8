//! The applet table: name, entry point, one-line help. Each applet lives in its own
//! file or folder here and uses only the `berth` core library. An applet's entry
//! gets its name (as invoked) and its arguments, and returns an exit code or an
//! error that `main` prints as one line.

#[cfg(feature = "engined")]
mod engined;
#[cfg(feature = "htpasswd")]
mod htpasswd;
#[cfg(feature = "images")]
mod images;
#[cfg(feature = "import")]
mod import;
#[cfg(feature = "init")]
mod init;
#[cfg(feature = "logcollect")]
mod logcollect;
#[cfg(feature = "login")]
mod login;
#[cfg(feature = "mkimage")]
mod mkimage;
#[cfg(feature = "pull")]
mod pull;
#[cfg(feature = "push")]
mod push;
#[cfg(feature = "registryd")]
mod registryd;
#[cfg(feature = "save")]
mod save;
#[cfg(feature = "search")]
mod search;
#[cfg(feature = "sign")]
mod sign;

/// One applet.
pub struct Applet {
    pub name: &'static str,
    pub main: fn(&str, &[String]) -> berth::Result<u8>,
    pub help: &'static str,
    /// Internal applets (re-exec helpers) are not listed or installed.
    pub hidden: bool,
    /// Whether `berth --install` makes a link for it. `init` gets none: a link
    /// named init early on a host's PATH would shadow /sbin/init (`init 6`).
    pub link: bool,
}

pub static TABLE: &[Applet] = &[
    #[cfg(feature = "engined")]
    Applet {
        name: "engined",
        main: engined::main,
        help: "container engine: the Docker Engine API for the stock docker CLI",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "engined")]
    Applet {
        name: "engined-shim",
        main: engined::shim::main,
        help: "engined's per-container supervisor (internal)",
        hidden: true,
        link: false,
    },
    #[cfg(feature = "images")]
    Applet {
        name: "images",
        main: images::images,
        help: "list images in the local store",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "import")]
    Applet {
        name: "import",
        main: import::main,
        help: "create an image from a rootfs tarball (docker import)",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "save")]
    Applet {
        name: "load",
        main: save::load,
        help: "load images from a docker-archive or OCI layout tar",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "login")]
    Applet {
        name: "login",
        main: login::login,
        help: "log in to a registry (docker's config.json)",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "login")]
    Applet {
        name: "logout",
        main: login::logout,
        help: "remove stored registry credentials",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "mkimage")]
    Applet {
        name: "mkimage",
        main: mkimage::main,
        help: "build an image from a recipe: stages, layers, size report (reproducible)",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "pull")]
    Applet {
        name: "pull",
        main: pull::main,
        help: "pull an image from a registry into the local store",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "push")]
    Applet {
        name: "push",
        main: push::main,
        help: "push an image to a registry",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "images")]
    Applet {
        name: "rmi",
        main: images::rmi,
        help: "remove images from the local store",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "save")]
    Applet {
        name: "save",
        main: save::save,
        help: "write images to a docker-archive or OCI layout tar",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "search")]
    Applet {
        name: "search",
        main: search::main,
        help: "search registries (docker search)",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "sign")]
    Applet {
        name: "sign",
        main: sign::sign,
        help: "sign an image (simple signing, OpenPGP) or make a signing key",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "images")]
    Applet {
        name: "tag",
        main: images::tag,
        help: "give an image another name",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "htpasswd")]
    Applet {
        name: "htpasswd",
        main: htpasswd::main,
        help: "add or change bcrypt users in an htpasswd file",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "logcollect")]
    Applet {
        name: "logcollect",
        main: logcollect::main,
        help: "keep every container's logs on the host and ship them to syslog",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "init")]
    Applet {
        name: "init",
        main: init::main,
        help: "PID 1 for containers: dumb-init compatible, can name the host from DNS",
        hidden: false,
        link: false,
    },
    // Installed as a link, so `#!/usr/bin/dumb-init /bin/bash` images work as they are.
    #[cfg(feature = "init")]
    Applet {
        name: "dumb-init",
        main: init::main,
        help: "init under dumb-init's name (same options and behaviour)",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "sign")]
    Applet {
        name: "verify",
        main: sign::verify,
        help: "list an image's signatures and check them against the policy",
        hidden: false,
        link: true,
    },
    #[cfg(feature = "registryd")]
    Applet {
        name: "registryd",
        main: registryd::main,
        help: "OCI/Docker v2 registry (Distribution's config.yml)",
        hidden: false,
        link: true,
    },
];

pub fn find(name: &str) -> Option<&'static Applet> {
    TABLE.iter().find(|a| a.name == name)
}

/// Parse arguments with argh. (argh has no flattening, so applets that take the
/// same registry options each declare them; the values go straight to
/// `berth::registry::Settings::with_flags`, where their meaning lives.) `--help` prints and gives `Err(0)`; a usage error
/// prints and gives `Err(2)`: the applet returns that code.
pub fn parse_args<T: argh::FromArgs>(name: &str, args: &[String]) -> Result<T, u8> {
    let rest: Vec<&str> = args.iter().map(String::as_str).collect();
    T::from_args(&[name], &rest).map_err(|e| match e.status {
        Ok(()) => {
            print!("{}", e.output);
            0
        }
        Err(()) => {
            eprint!("{}", e.output);
            if !e.output.ends_with('\n') {
                eprintln!();
            }
            2
        }
    })
}
