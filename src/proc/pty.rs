//! Terminals for containers: a pty opened from the `/dev/ptmx` of the calling
//! process's mount namespace — inside a container, its own devpts, so `tty`
//! there names a device that exists there — and the master handed to the
//! process that relays it (shim, engined) over a unix socket (SCM_RIGHTS).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// A new pty pair: (master, slave, the slave's path). Both close on exec; the
/// caller dup2s the slave onto the stdio it wants.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd, PathBuf)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: open with a NUL-terminated literal; the fd is owned right after.
    let m = unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `m` is a fresh descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int.
    unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(m, libc::TIOCGPTN, &mut n) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let path = PathBuf::from(format!("/dev/pts/{n}"));
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: open with a NUL-terminated path.
    let s = unsafe { libc::open(c.as_ptr(), flags) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a fresh descriptor we own.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s) }, path))
}

/// Send `fd` over the unix socket `sock` (one byte of data carries it).
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [io::IoSlice::new(b"F")];
    let fds = [fd];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(io::Error::from)
}

/// Receive a descriptor sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "no descriptor came with the message",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_pty_master_travels_over_a_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (m, s, path) = open_pty().unwrap();
        assert!(path.starts_with("/dev/pts"));
        send_fd(a.as_raw_fd(), m.as_raw_fd()).unwrap();
        drop(m);
        let m2 = recv_fd(b.as_raw_fd()).unwrap();
        // what the slave writes, the received master reads
        let mut sf = std::fs::File::from(s);
        use std::io::{Read, Write};
        sf.write_all(b"x\n").unwrap();
        let mut mf = std::fs::File::from(m2);
        let mut buf = [0u8; 8];
        let n = mf.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"x"));
    }
}
