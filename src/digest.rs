//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the hashing readers and
//! writers that check them.
//!
//! A [`Digest`] is always valid once built: a registered algorithm and lowercase hex
//! of the right length, so it is safe to use as a path component. Everything that
//! stores content verifies it through [`Hasher`] before the content becomes visible.

use crate::error::{Error, Result};

mod resumable;
pub use resumable::ResumableSha256;
use sha2::Digest as _;
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// A digest algorithm the OCI image spec registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algo: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algo
    }
    pub fn hex(&self) -> &str {
        &self.hex
    }
    /// The short form `docker images` prints (12 hex digits).
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
    /// Digest of a byte slice.
    pub fn of(algo: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }
    /// sha256 of a byte slice (the default everywhere).
    pub fn sha256(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
    /// A new hasher of this digest's algorithm.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algo)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| {
            Error::new(
                crate::error::Kind::Invalid,
                format!("invalid digest {s:?}: expected ALGORITHM:HEX"),
            )
        })?;
        let algo = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                return Err(Error::new(
                    crate::error::Kind::Unsupported,
                    format!("unsupported digest algorithm {alg:?} (sha256 and sha512 are)"),
                ));
            }
        };
        if hex.len() != algo.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(format!(
                "invalid digest {s:?}: expected {} lowercase hex digits",
                algo.hex_len()
            )));
        }
        Ok(Digest {
            algo,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Lowercase hex of bytes (sha2 0.11 output does not format with `{:x}`).
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// An incremental hash of either algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: Algorithm) -> Hasher {
        match algo {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algo: Algorithm::Sha256,
                hex: to_hex(&h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algo: Algorithm::Sha512,
                hex: to_hex(&h.finalize()),
            },
        }
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algo: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algo),
            count: 0,
        }
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    /// Digest and byte count of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.count)
    }
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W, algo: Algorithm) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(algo),
            count: 0,
        }
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that fails at EOF unless the content matched the expected digest and
/// size. Wrap every untrusted blob stream in one before anything is kept.
pub struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Digest,
    size: Option<u64>,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, size: Option<u64>) -> Self {
        let algo = expected.algorithm();
        VerifyingReader {
            inner: HashingReader::new(inner, algo),
            expected,
            size,
            done: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if let Some(size) = self.size
            && self.inner.count() > size
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "content of {} is longer than the expected {size} bytes",
                    self.expected
                ),
            ));
        }
        if n == 0 && !buf.is_empty() {
            self.done = true;
            let count = self.inner.count();
            let got = std::mem::replace(
                &mut self.inner.hasher,
                Hasher::new(self.expected.algorithm()),
            )
            .finish();
            if let Some(size) = self.size
                && count != size
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "content of {} is {count} bytes, expected {size}",
                        self.expected
                    ),
                ));
            }
            if got != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("digest mismatch: expected {}, got {got}", self.expected),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::sha256(b""));
        assert!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>()
                .is_err()
        );
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(
            "md5:d41d8cd98f00b204e9800998ecf8427e"
                .parse::<Digest>()
                .is_err()
        );
        assert!("sha256".parse::<Digest>().is_err());
        assert!(
            "sha256:../../../../etc/passwd000000000000000000000000000000000000000000"
                .parse::<Digest>()
                .is_err()
        );
        let d512 = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(d512.to_string().parse::<Digest>().unwrap(), d512);
    }

    #[test]
    fn verifying_reader_catches_mismatch_and_size() {
        let good = Digest::sha256(b"hello");
        let mut out = Vec::new();
        VerifyingReader::new(&b"hello"[..], good.clone(), Some(5))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");
        assert!(
            VerifyingReader::new(&b"hellO"[..], good.clone(), None)
                .read_to_end(&mut Vec::new())
                .is_err()
        );
        assert!(
            VerifyingReader::new(&b"hello"[..], good, Some(4))
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }
}
