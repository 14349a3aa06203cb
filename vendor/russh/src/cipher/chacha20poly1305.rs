// Copyright 2016 Pierre-Étienne Meunier
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.
//

// http://cvsweb.openbsd.org/cgi-bin/cvsweb/src/usr.bin/ssh/PROTOCOL.chacha20poly1305?annotate=HEAD

#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs::aead::chacha20_poly1305_openssh;
#[cfg(all(not(feature = "aws-lc-rs"), feature = "ring"))]
use ring::aead::chacha20_poly1305_openssh;

#[cfg(feature = "openssl-chacha")]
use sallyport_chachapoly as openssl;
use super::super::Error;
use crate::mac::MacAlgorithm;

pub struct SshChacha20Poly1305Cipher {}

impl super::Cipher for SshChacha20Poly1305Cipher {
    fn key_len(&self) -> usize {
        chacha20_poly1305_openssh::KEY_LEN
    }

    fn make_opening_key(
        &self,
        k: &[u8],
        _: &[u8],
        _: &[u8],
        _: &dyn MacAlgorithm,
    ) -> Box<dyn super::OpeningKey + Send> {
        Box::new(OpeningKey {
            aws: chacha20_poly1305_openssh::OpeningKey::new(
                #[allow(clippy::unwrap_used)]
                k.try_into().unwrap(),
            ),
            #[cfg(feature = "openssl-chacha")]
            openssl: openssl_engine(k),
        })
    }

    fn make_sealing_key(
        &self,
        k: &[u8],
        _: &[u8],
        _: &[u8],
        _: &dyn MacAlgorithm,
    ) -> Box<dyn super::SealingKey + Send> {
        Box::new(SealingKey {
            aws: chacha20_poly1305_openssh::SealingKey::new(
                #[allow(clippy::unwrap_used)]
                k.try_into().unwrap(),
            ),
            #[cfg(feature = "openssl-chacha")]
            openssl: openssl_engine(k),
        })
    }
}

// sallyport change: with the `openssl-chacha` feature, packets are sealed and opened by
// OpenSSL's libcrypto (`vendor/chachapoly`), which is about twice as fast on CPUs
// with AVX-512. The aws-lc key stays: it decrypts packet lengths (four bytes, `&self`) and
// takes over if libcrypto could not be set up or fails before a packet was changed.
/// The libcrypto engine for key `k`; without one (libcrypto offers no ChaCha20 or Poly1305,
/// as under a FIPS-only configuration) aws-lc does the work, and the log says so once.
#[cfg(feature = "openssl-chacha")]
fn openssl_engine(k: &[u8]) -> Option<openssl::Engine> {
    let engine = openssl::Engine::new(k);
    if engine.is_none() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            log::warn!(
                "chacha20-poly1305@openssh.com: OpenSSL's libcrypto offers no ChaCha20 or \
                 Poly1305 (see its configuration, OPENSSL_CONF); using aws-lc's, which costs \
                 more CPU"
            );
        });
    }
    engine
}

pub struct OpeningKey {
    aws: chacha20_poly1305_openssh::OpeningKey,
    #[cfg(feature = "openssl-chacha")]
    openssl: Option<openssl::Engine>,
}

pub struct SealingKey {
    aws: chacha20_poly1305_openssh::SealingKey,
    #[cfg(feature = "openssl-chacha")]
    openssl: Option<openssl::Engine>,
}

impl super::OpeningKey for OpeningKey {
    fn decrypt_packet_length(
        &self,
        sequence_number: u32,
        encrypted_packet_length: &[u8],
    ) -> [u8; 4] {
        self.aws.decrypt_packet_length(
            sequence_number,
            #[allow(clippy::unwrap_used)]
            encrypted_packet_length.try_into().unwrap(),
        )
    }

    fn tag_len(&self) -> usize {
        chacha20_poly1305_openssh::TAG_LEN
    }

    fn open<'a>(
        &mut self,
        sequence_number: u32,
        ciphertext_and_tag: &'a mut [u8],
    ) -> Result<&'a [u8], Error> {
        let ciphertext_len = ciphertext_and_tag.len() - self.tag_len();
        let (ciphertext_in_plaintext_out, tag) = ciphertext_and_tag.split_at_mut(ciphertext_len);

        #[cfg(feature = "openssl-chacha")]
        if let Some(engine) = &mut self.openssl {
            #[allow(clippy::unwrap_used)]
            match engine.open(sequence_number, ciphertext_in_plaintext_out, &tag.try_into().unwrap())
            {
                Ok(()) => {
                    return ciphertext_in_plaintext_out
                        .get(super::PACKET_LENGTH_LEN..)
                        .ok_or(Error::DecryptionError);
                }
                Err(openssl::Failure::BadTag) => return Err(Error::DecryptionError),
                Err(openssl::Failure::Untouched) => {
                    log::warn!("libcrypto failed to open a packet; aws-lc takes over");
                    self.openssl = None;
                }
                Err(openssl::Failure::Touched) => {
                    log::warn!("libcrypto failed half-way through opening a packet");
                    return Err(Error::DecryptionError);
                }
            }
        }

        self.aws
            .open_in_place(
                sequence_number,
                ciphertext_in_plaintext_out,
                #[allow(clippy::unwrap_used)]
                &tag.try_into().unwrap(),
            )
            .map_err(|_| Error::DecryptionError)
    }
}

impl super::SealingKey for SealingKey {
    fn padding_length(&self, payload: &[u8]) -> usize {
        let block_size = 8;
        let extra_len = super::PACKET_LENGTH_LEN + super::PADDING_LENGTH_LEN;
        let padding_len = if payload.len() + extra_len <= super::MINIMUM_PACKET_LEN {
            super::MINIMUM_PACKET_LEN - payload.len() - super::PADDING_LENGTH_LEN
        } else {
            block_size - ((super::PADDING_LENGTH_LEN + payload.len()) % block_size)
        };
        if padding_len < super::PACKET_LENGTH_LEN {
            padding_len + block_size
        } else {
            padding_len
        }
    }

    // As explained in "SSH via CTR mode with stateful decryption" in
    // https://openvpn.net/papers/ssh-security.pdf, the padding doesn't need to
    // be random because we're doing stateful counter-mode encryption. Use
    // fixed padding to avoid PRNG overhead.
    fn fill_padding(&self, padding_out: &mut [u8]) {
        for padding_byte in padding_out {
            *padding_byte = 0;
        }
    }

    fn tag_len(&self) -> usize {
        chacha20_poly1305_openssh::TAG_LEN
    }

    fn seal(
        &mut self,
        sequence_number: u32,
        plaintext_in_ciphertext_out: &mut [u8],
        tag: &mut [u8],
    ) {
        #[cfg(feature = "openssl-chacha")]
        if let Some(engine) = &mut self.openssl {
            #[allow(clippy::unwrap_used)]
            let tag_out: &mut [u8; chacha20_poly1305_openssh::TAG_LEN] = tag.try_into().unwrap();
            match engine.seal(sequence_number, plaintext_in_ciphertext_out, tag_out) {
                Ok(()) => return,
                Err(openssl::Failure::Untouched | openssl::Failure::BadTag) => {
                    log::warn!("libcrypto failed to seal a packet; aws-lc takes over");
                    self.openssl = None;
                }
                Err(openssl::Failure::Touched) => {
                    log::warn!("libcrypto failed half-way through sealing a packet");
                    // Partly encrypted, so partly plaintext: nothing of it may leave. This
                    // method cannot fail, so the packet goes out as zeros with a zero tag,
                    // which the peer refuses, and it closes the connection.
                    plaintext_in_ciphertext_out.fill(0);
                    tag_out.fill(0);
                    self.openssl = None;
                    return;
                }
            }
        }

        self.aws.seal_in_place(
            sequence_number,
            plaintext_in_ciphertext_out,
            #[allow(clippy::unwrap_used)]
            tag.try_into().unwrap(),
        );
    }
}
