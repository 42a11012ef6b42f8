//! SHA-256 whose running state can be saved and taken up again, so an upload
//! session outlives the process that started it: registryd replicas sharing one
//! bucket continue each other's uploads, and S3 cannot read back the bytes of an
//! unfinished multipart upload to hash them again.
//!
//! The saved form is Go's `crypto/sha256` `MarshalBinary` (magic `sha\x03`, the
//! eight state words, the 64-byte block buffer, the byte count; 108 bytes), the
//! form Distribution keeps under `_uploads/<id>/hashstates/sha256/<offset>`, so
//! either registry can take up a session the other saved.

use super::{Algorithm, Digest, to_hex};
use sha2::block_api::compress256;

const MAGIC: &[u8; 4] = b"sha\x03";
/// Bytes of the saved form.
pub const STATE_LEN: usize = 4 + 32 + 64 + 8;
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Clone)]
pub struct ResumableSha256 {
    h: [u32; 8],
    buf: [u8; 64],
    nbuf: usize,
    len: u64,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl ResumableSha256 {
    pub fn new() -> ResumableSha256 {
        ResumableSha256 {
            h: H0,
            buf: [0; 64],
            nbuf: 0,
            len: 0,
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.nbuf > 0 {
            let take = (64 - self.nbuf).min(data.len());
            self.buf[self.nbuf..self.nbuf + take].copy_from_slice(&data[..take]);
            self.nbuf += take;
            data = &data[take..];
            if self.nbuf < 64 {
                return;
            }
            compress256(&mut self.h, &[self.buf]);
            self.nbuf = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        if !blocks.is_empty() {
            compress256(&mut self.h, blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.nbuf = rest.len();
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut tail = [0u8; 128];
        tail[..self.nbuf].copy_from_slice(&self.buf[..self.nbuf]);
        tail[self.nbuf] = 0x80;
        let total = if self.nbuf < 56 { 64 } else { 128 };
        tail[total - 8..total].copy_from_slice(&bits.to_be_bytes());
        let (blocks, _) = tail[..total].as_chunks::<64>();
        compress256(&mut self.h, blocks);
        let mut out = [0u8; 32];
        for (c, w) in out.chunks_mut(4).zip(self.h) {
            c.copy_from_slice(&w.to_be_bytes());
        }
        Digest {
            algo: Algorithm::Sha256,
            hex: to_hex(&out),
        }
    }

    /// The saved form (Go's MarshalBinary).
    pub fn save(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(STATE_LEN);
        b.extend_from_slice(MAGIC);
        for w in self.h {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend_from_slice(&self.buf[..self.nbuf]);
        b.resize(b.len() + 64 - self.nbuf, 0);
        b.extend_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Take up a saved state; None when it is not one.
    pub fn restore(b: &[u8]) -> Option<ResumableSha256> {
        if b.len() != STATE_LEN || &b[..4] != MAGIC {
            return None;
        }
        let mut h = [0u32; 8];
        for (i, w) in h.iter_mut().enumerate() {
            *w = u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().ok()?);
        }
        let len = u64::from_be_bytes(b[100..108].try_into().ok()?);
        let nbuf = (len % 64) as usize;
        let mut buf = [0u8; 64];
        buf.copy_from_slice(&b[36..100]);
        Some(ResumableSha256 { h, buf, nbuf, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256_across_saves_at_every_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for n in [0usize, 1, 55, 56, 63, 64, 65, 119, 128, 999, 1000] {
            let mut a = ResumableSha256::new();
            a.update(&data[..n]);
            let saved = a.save();
            assert_eq!(saved.len(), STATE_LEN);
            let mut b = ResumableSha256::restore(&saved).unwrap();
            b.update(&data[n..]);
            assert_eq!(b.finish(), Digest::sha256(&data), "split at {n}");
            let mut c = ResumableSha256::new();
            c.update(&data[..n]);
            assert_eq!(c.finish(), Digest::sha256(&data[..n]), "prefix {n}");
        }
        assert!(ResumableSha256::restore(b"sha\x03short").is_none());
        assert!(ResumableSha256::restore(&[0u8; STATE_LEN]).is_none());
    }

    #[test]
    fn saves_what_go_saves() {
        // Go: h := sha256.New(); h.Write([]byte("abc")); h.(encoding.BinaryMarshaler).MarshalBinary()
        let mut a = ResumableSha256::new();
        a.update(b"abc");
        let s = a.save();
        assert_eq!(&s[..4], b"sha\x03");
        assert_eq!(&s[4..8], &0x6a09e667u32.to_be_bytes());
        assert_eq!(&s[36..39], b"abc");
        assert!(s[39..100].iter().all(|&b| b == 0));
        assert_eq!(&s[100..], &3u64.to_be_bytes());
    }
}
