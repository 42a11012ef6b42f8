//! The multi-call entry point: picks an applet by argv[0] (busybox style) or by the
//! first argument (`berth APPLET ARGS`), and turns its result into an exit code.
//! Nothing else lives here; applets are in `applets/`, the shared code in the lib.

#[path = "../applets/mod.rs"]
mod applets;

use std::path::Path;
use std::process::ExitCode;

fn usage() -> String {
    let mut s = format!(
        "berth {} — a grid site's container toolchain in one binary\n\n\
         Usage: berth APPLET [ARGS...]   or   APPLET [ARGS...] through a link named APPLET\n\
         \x20      berth --list | --install [-s] DIR | --version | --help\n\nApplets:\n",
        berth::VERSION
    );
    for a in applets::TABLE.iter().filter(|a| !a.hidden) {
        s.push_str(&format!("  {:<12} {}\n", a.name, a.help));
    }
    s.push_str("\nRun `berth APPLET --help` for an applet's options.\n");
    s
}

fn run_applet(name: &str, args: &[String]) -> ExitCode {
    let Some(applet) = applets::find(name) else {
        eprintln!("{name}: applet not found");
        return ExitCode::from(127);
    };
    match (applet.main)(name, args) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn install(args: &[String]) -> Result<(), String> {
    let (symlink, dir) = match args {
        [flag, dir] if flag == "-s" => (true, dir),
        [dir] if dir != "-s" => (false, dir),
        _ => return Err("usage: berth --install [-s] DIR".into()),
    };
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| format!("cannot resolve /proc/self/exe: {e}"))?;
    let dir = Path::new(dir);
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    for a in applets::TABLE.iter().filter(|a| !a.hidden && a.link) {
        let target = dir.join(a.name);
        if target.symlink_metadata().is_ok() {
            eprintln!("{}: exists, skipped", target.display());
            continue;
        }
        let r = if symlink {
            std::os::unix::fs::symlink(&exe, &target)
        } else {
            std::fs::hard_link(&exe, &target)
        };
        r.map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EXDEV) {
                " (another filesystem: use -s for symlinks)"
            } else {
                ""
            };
            format!("{}: {e}{hint}", target.display())
        })?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = args.first().map(String::as_str).unwrap_or("berth");
    let base = Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("berth");
    // A login shell's argv[0] starts with '-'.
    let base = base.trim_start_matches('-');
    if base != "berth" {
        return run_applet(base, &args[1..]);
    }
    match args.get(1).map(String::as_str) {
        None => {
            eprint!("{}", usage());
            ExitCode::from(2)
        }
        Some("--help" | "-h" | "help") => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Some("--version" | "-V" | "version") => {
            println!("berth {}", berth::VERSION);
            ExitCode::SUCCESS
        }
        Some("--list" | "-l") => {
            for a in applets::TABLE.iter().filter(|a| !a.hidden) {
                println!("{}", a.name);
            }
            ExitCode::SUCCESS
        }
        Some("--install") => match install(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e}");
                ExitCode::from(1)
            }
        },
        Some(name) => run_applet(name, &args[2..]),
    }
}
