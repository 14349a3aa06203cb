//! `chacha20-poly1305@openssh.com` computed by the system's OpenSSL libcrypto (>= 3.0), for
//! the vendored russh (`vendor/russh`, feature `openssl-chacha`; see its SALLYPORT-PATCH.md).
//!
//! The construction is the one in OpenSSH's PROTOCOL.chacha20poly1305 and
//! cipher-chachapoly-libcrypto.c, byte for byte what aws-lc's `chacha20_poly1305_openssh`
//! computes (the tests below compare the two). Only the primitives differ: OpenSSL has AVX-512
//! code for ChaCha20 and Poly1305 where aws-lc (as built by aws-lc-sys) has AVX2 for ChaCha20
//! and SSE2 C for Poly1305, so a 32 KiB channel packet is sealed or opened about twice as fast
//! (BENCHMARKS.md). A forwarding gateway does that twice for every byte it carries.
//!
//! The libcrypto contexts live in the two types below, which own their pointers and free them
//! on drop; nothing here can panic. [`Engine::new`] gives `None` where libcrypto offers no
//! ChaCha20 or Poly1305 (say, a FIPS-only configuration), and a later libcrypto failure (it
//! would take an allocation failure) is reported as a [`Failure`] saying whether the buffer
//! was changed, so the caller can fall back to another implementation or fail the packet.

// The one crate in the workspace with `unsafe`: it is the FFI boundary, kept this small.
#![allow(unsafe_code)]

use std::ptr::{self, NonNull};

use openssl_sys as ffi;

/// Bytes of the encrypted packet length at the start of each packet.
const LENGTH_LEN: usize = 4;
const KEY_HALF: usize = 32;
/// Bytes of the Poly1305 tag after each packet.
pub const TAG_LEN: usize = 16;

/// What went wrong in a seal or open.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The tag did not match (open only): the packet is forged or corrupt.
    BadTag,
    /// libcrypto reported an error before the buffer was changed.
    Untouched,
    /// libcrypto reported an error after the buffer was partly rewritten.
    Touched,
}

/// Drops the reasons libcrypto queued for a failed call, so that they are not blamed on a
/// later, unrelated call on this thread.
fn clear_errors() {
    // SAFETY: no arguments; it empties this thread's error queue.
    unsafe { ffi::ERR_clear_error() }
}

/// An `EVP_CIPHER_CTX` keyed for ChaCha20; each use sets a new IV.
struct ChaCha(NonNull<ffi::EVP_CIPHER_CTX>);

// SAFETY: the context is owned by this value alone and is only used through `&mut self`, so it
// is never touched by two threads at once; OpenSSL contexts may move between threads.
unsafe impl Send for ChaCha {}

impl ChaCha {
    fn new(key: &[u8]) -> Option<ChaCha> {
        if key.len() != KEY_HALF {
            return None;
        }
        // SAFETY: a fresh context is checked for null before use; the key is KEY_HALF bytes,
        // ChaCha20's key length, and a null IV is allowed (one is set before every use).
        unsafe {
            let ctx = ChaCha(NonNull::new(ffi::EVP_CIPHER_CTX_new())?);
            let ok = ffi::EVP_CipherInit_ex(
                ctx.0.as_ptr(),
                ffi::EVP_chacha20(),
                ptr::null_mut(),
                key.as_ptr(),
                ptr::null(),
                1,
            );
            if ok != 1 {
                clear_errors();
            }
            (ok == 1).then_some(ctx)
        }
    }

    /// XORs `buf` with the key stream for packet `seq`, starting at block `counter`.
    fn apply(&mut self, counter: u64, seq: u32, buf: &mut [u8]) -> bool {
        let Ok(len) = i32::try_from(buf.len()) else {
            return false;
        };
        // OpenSSH's layout of OpenSSL's 16-byte ChaCha20 IV: a 64-bit little-endian block
        // counter, then the 64-bit big-endian packet sequence number as the nonce.
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&counter.to_le_bytes());
        iv[8..].copy_from_slice(&u64::from(seq).to_be_bytes());
        let mut out_len = 0;
        let data = buf.as_mut_ptr();
        // SAFETY: the context was keyed in `new`; re-initialising with only an IV keeps the
        // key and resets the stream position. A stream cipher writes exactly `len` bytes, and
        // OpenSSL allows the output to be the input (only a partial overlap is refused), so
        // encrypting `buf` in place stays inside it.
        let ok = unsafe {
            ffi::EVP_CipherInit_ex(
                self.0.as_ptr(),
                ptr::null(),
                ptr::null_mut(),
                ptr::null(),
                iv.as_ptr(),
                1,
            ) == 1
                && ffi::EVP_CipherUpdate(self.0.as_ptr(), data, &mut out_len, data, len) == 1
                && out_len == len
        };
        if !ok {
            clear_errors();
        }
        ok
    }
}

impl Drop for ChaCha {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_CIPHER_CTX_new and is freed once, here.
        unsafe { ffi::EVP_CIPHER_CTX_free(self.0.as_ptr()) }
    }
}

/// An `EVP_MAC_CTX` for Poly1305; each use sets that packet's one-time key.
struct Poly1305(NonNull<ffi::EVP_MAC_CTX>);

// SAFETY: as for `ChaCha`.
unsafe impl Send for Poly1305 {}

impl Poly1305 {
    fn new() -> Option<Poly1305> {
        // SAFETY: the fetched MAC is checked for null; the context holds its own reference to
        // it, so ours is released at once.
        unsafe {
            let mac = ffi::EVP_MAC_fetch(ptr::null_mut(), c"POLY1305".as_ptr(), ptr::null());
            if mac.is_null() {
                clear_errors();
                return None;
            }
            let ctx = ffi::EVP_MAC_CTX_new(mac);
            ffi::EVP_MAC_free(mac);
            Some(Poly1305(NonNull::new(ctx)?))
        }
    }

    fn tag(&mut self, key: &[u8; 2 * KEY_HALF], data: &[u8]) -> Option<[u8; TAG_LEN]> {
        let mut tag = [0u8; TAG_LEN];
        let mut tag_len = 0;
        // SAFETY: the key is Poly1305's 32 bytes (the first half of `key`); `tag` has room for
        // the TAG_LEN bytes EVP_MAC_final is allowed to write.
        let ok = unsafe {
            ffi::EVP_MAC_init(self.0.as_ptr(), key.as_ptr(), KEY_HALF, ptr::null()) == 1
                && ffi::EVP_MAC_update(self.0.as_ptr(), data.as_ptr(), data.len()) == 1
                && ffi::EVP_MAC_final(self.0.as_ptr(), tag.as_mut_ptr(), &mut tag_len, TAG_LEN) == 1
        };
        if !ok {
            clear_errors();
        }
        (ok && tag_len == TAG_LEN).then_some(tag)
    }
}

impl Drop for Poly1305 {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_MAC_CTX_new and is freed once, here.
        unsafe { ffi::EVP_MAC_CTX_free(self.0.as_ptr()) }
    }
}

/// One direction's keys: `key` is the 64 bytes of key material the key exchange gave, the
/// main (payload) key first and the packet-length key second.
pub struct Engine {
    main: ChaCha,
    length: ChaCha,
    poly: Poly1305,
}

impl Engine {
    /// `None` if libcrypto cannot provide ChaCha20 or Poly1305 (the caller then uses aws-lc).
    pub fn new(key: &[u8]) -> Option<Engine> {
        ffi::init();
        let (main, length) = key.split_at_checked(KEY_HALF)?;
        Some(Engine {
            main: ChaCha::new(main)?,
            length: ChaCha::new(length)?,
            poly: Poly1305::new()?,
        })
    }

    /// The packet's one-time Poly1305 key: the first key-stream block of the main key.
    fn poly_key(&mut self, seq: u32) -> Option<[u8; 2 * KEY_HALF]> {
        let mut block = [0u8; 2 * KEY_HALF];
        self.main.apply(0, seq, &mut block).then_some(block)
    }

    /// Encrypts `packet` (length, then padding length, payload and padding) in place and
    /// writes its tag. On `Err(Touched)` the packet may be partly encrypted, partly not: the
    /// caller must not send it as it is.
    pub fn seal(
        &mut self,
        seq: u32,
        packet: &mut [u8],
        tag_out: &mut [u8; TAG_LEN],
    ) -> Result<(), Failure> {
        let poly_key = self.poly_key(seq).ok_or(Failure::Untouched)?;
        if packet.len() < LENGTH_LEN {
            return Err(Failure::Untouched);
        }
        let (length, body) = packet.split_at_mut(LENGTH_LEN);
        if !(self.length.apply(0, seq, length) && self.main.apply(1, seq, body)) {
            return Err(Failure::Touched);
        }
        *tag_out = self.poly.tag(&poly_key, packet).ok_or(Failure::Touched)?;
        Ok(())
    }

    /// Checks `packet`'s tag, then decrypts everything after its (still encrypted) length in
    /// place. Nothing is decrypted unless the tag matches.
    pub fn open(
        &mut self,
        seq: u32,
        packet: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Failure> {
        use subtle::ConstantTimeEq;
        let poly_key = self.poly_key(seq).ok_or(Failure::Untouched)?;
        let expected = self.poly.tag(&poly_key, packet).ok_or(Failure::Untouched)?;
        if !bool::from(expected.ct_eq(tag)) {
            return Err(Failure::BadTag);
        }
        let body = packet.get_mut(LENGTH_LEN..).ok_or(Failure::Untouched)?;
        if !self.main.apply(1, seq, body) {
            return Err(Failure::Touched);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use aws_lc_rs::aead::chacha20_poly1305_openssh as reference;

    fn key() -> [u8; 64] {
        std::array::from_fn(|i| (i * 7 + 3) as u8)
    }

    fn packet(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 5) as u8).collect()
    }

    #[test]
    fn seals_as_aws_lc_does() {
        let mut engine = Engine::new(&key()).unwrap();
        let aws = reference::SealingKey::new(&key());
        // Short packets, a block boundary, a full channel packet; the largest sequence number.
        for (len, seq) in [
            (8, 0),
            (64, 1),
            (65, 7),
            (1024, 3),
            (32_796, 42),
            (32_796, u32::MAX),
        ] {
            let (mut ours, mut theirs) = (packet(len), packet(len));
            let (mut our_tag, mut their_tag) = ([0; TAG_LEN], [0; TAG_LEN]);
            engine.seal(seq, &mut ours, &mut our_tag).unwrap();
            aws.seal_in_place(seq, &mut theirs, &mut their_tag);
            assert_eq!(ours, theirs, "ciphertext, {len} bytes, seq {seq}");
            assert_eq!(our_tag, their_tag, "tag, {len} bytes, seq {seq}");
        }
    }

    #[test]
    fn opens_what_aws_lc_sealed_and_refuses_changes() {
        let mut engine = Engine::new(&key()).unwrap();
        let aws = reference::SealingKey::new(&key());
        let plain = packet(4100);
        let mut sealed = plain.clone();
        let mut tag = [0; TAG_LEN];
        aws.seal_in_place(9, &mut sealed, &mut tag);

        let mut opened = sealed.clone();
        engine.open(9, &mut opened, &tag).unwrap();
        assert_eq!(opened[LENGTH_LEN..], plain[LENGTH_LEN..]);

        // A flipped ciphertext bit, a flipped tag bit, the wrong sequence number: refused, and
        // the buffer is left as it came.
        let mut flipped = sealed.clone();
        flipped[100] ^= 1;
        let as_flipped = flipped.clone();
        assert_eq!(engine.open(9, &mut flipped, &tag), Err(Failure::BadTag));
        assert_eq!(flipped, as_flipped);
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        let mut copy = sealed.clone();
        assert_eq!(engine.open(9, &mut copy, &bad_tag), Err(Failure::BadTag));
        assert_eq!(copy, sealed);
        assert_eq!(engine.open(10, &mut copy, &tag), Err(Failure::BadTag));
        assert_eq!(copy, sealed);
    }

    #[test]
    fn refuses_a_key_of_the_wrong_length() {
        assert!(Engine::new(&[0; 32]).is_none());
        assert!(Engine::new(&[0; 63]).is_none());
    }
}
