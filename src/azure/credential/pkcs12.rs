//! Reads the private key and certificates of a PFX (PKCS#12, RFC 7292) file: the form Windows,
//! Azure Key Vault and `openssl pkcs12 -export` hand a certificate out in.
//!
//! Supported: bags in plain `data` or in `encryptedData`, keys in a `keyBag` or a
//! `pkcs8ShroudedKeyBag`, encrypted with PBES2 (PBKDF2 with HMAC-SHA-1 or SHA-256, AES-CBC):
//! what OpenSSL 3 writes by default and Windows' "AES256-SHA256" export. The legacy PKCS#12
//! schemes (3DES and RC2 keyed by the PKCS#12 KDF) are refused with a way out, as is BER's
//! indefinite length. The file's MAC is not checked: a wrong password shows as a key that
//! does not decrypt.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::pbkdf2;

/// What a PFX file holds that a certificate credential uses.
pub struct Contents {
    /// PKCS#8 `PrivateKeyInfo` DER of each key found.
    pub keys: Vec<Vec<u8>>,
    /// DER of each X.509 certificate, in file order.
    pub certificates: Vec<Vec<u8>>,
}

// Object identifiers, as the content octets of their DER encoding.
const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
const KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01,
];
const SHROUDED_KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
];
const CERT_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
];
const X509_CERTIFICATE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
const PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const HMAC_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
const HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
const AES_128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
const AES_192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
const AES_256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
/// `pkcs-12PbeIds`: the legacy schemes (`pbeWithSHAAnd3-KeyTripleDES-CBC`, RC2, RC4).
const LEGACY_PBE_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const EXPLICIT_0: u8 = 0xa0;
const IMPLICIT_0: u8 = 0x80;

/// More PBKDF2 rounds than this is a broken (or hostile) file, not a careful one.
const MAX_ITERATIONS: u32 = 10_000_000;

/// Reads `der`, decrypting with `password` (empty when none is given, as OpenSSL does).
pub fn parse(der: &[u8], password: &str) -> Result<Contents, String> {
    let mut pfx = Reader::new(der).sequence()?;
    let version = pfx.read(INTEGER)?;
    if version != [3] {
        return Err("not a PKCS#12 file (version is not 3)".into());
    }
    let auth_safe = data_content(&mut pfx.sequence()?)?;
    let mut contents = Contents {
        keys: Vec::new(),
        certificates: Vec::new(),
    };
    let mut infos = Reader::new(auth_safe).sequence()?;
    while !infos.is_empty() {
        let mut info = infos.sequence()?;
        let kind = info.read(OID)?;
        let safe_contents = if kind == DATA {
            data_content(&mut info)?.to_vec()
        } else if kind == ENCRYPTED_DATA {
            let mut data = Reader::new(info.read(EXPLICIT_0)?).sequence()?;
            data.read(INTEGER)?;
            let mut content = data.sequence()?;
            content.read(OID)?;
            let algorithm = content.read_tlv(SEQUENCE)?;
            let encrypted = content.read(IMPLICIT_0)?;
            decrypt(algorithm, encrypted, password)?
        } else {
            continue;
        };
        read_bags(&safe_contents, password, &mut contents)?;
    }
    Ok(contents)
}

/// The octets of a `data` ContentInfo's `[0] EXPLICIT OCTET STRING`, its type already read
/// (`info` holds the rest) or not yet (then the type must be `data`).
fn data_content<'a>(info: &mut Reader<'a>) -> Result<&'a [u8], String> {
    if info.peek() == Some(OID) && info.read(OID)? != DATA {
        return Err("the PKCS#12 content is not plain data (public-key integrity mode)".into());
    }
    Reader::new(info.read(EXPLICIT_0)?).read(OCTET_STRING)
}

fn read_bags(safe_contents: &[u8], password: &str, out: &mut Contents) -> Result<(), String> {
    let mut bags = Reader::new(safe_contents).sequence()?;
    while !bags.is_empty() {
        let mut bag = bags.sequence()?;
        let kind = bag.read(OID)?;
        let mut value = Reader::new(bag.read(EXPLICIT_0)?);
        if kind == KEY_BAG {
            out.keys.push(value.read_tlv(SEQUENCE)?.to_vec());
        } else if kind == SHROUDED_KEY_BAG {
            let mut info = value.sequence()?;
            let algorithm = info.read_tlv(SEQUENCE)?;
            let encrypted = info.read(OCTET_STRING)?;
            out.keys.push(decrypt(algorithm, encrypted, password)?);
        } else if kind == CERT_BAG {
            let mut cert = value.sequence()?;
            if cert.read(OID)? == X509_CERTIFICATE {
                let der = Reader::new(cert.read(EXPLICIT_0)?).read(OCTET_STRING)?;
                out.certificates.push(der.to_vec());
            }
        }
    }
    Ok(())
}

/// Decrypts `encrypted` as the `AlgorithmIdentifier` TLV `algorithm` says (PBES2 only).
fn decrypt(algorithm: &[u8], encrypted: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let mut algorithm = Reader::new(algorithm).sequence()?;
    let scheme = algorithm.read(OID)?;
    if scheme.starts_with(LEGACY_PBE_PREFIX) {
        return Err(
            "the PFX uses legacy PKCS#12 encryption (3DES/RC2, as OpenSSL 1.x and \
                    older Windows exports write): re-export it with AES (`openssl pkcs12 -in \
                    old.pfx -legacy -nodes | openssl pkcs12 -export -out new.pfx`) or use PEM"
                .into(),
        );
    }
    if scheme != PBES2 {
        return Err("the PFX is encrypted with an unknown scheme (PBES2 is supported)".into());
    }
    let mut params = algorithm.sequence()?;
    let mut kdf = params.sequence()?;
    if kdf.read(OID)? != PBKDF2 {
        return Err("the PFX's key derivation is not PBKDF2".into());
    }
    let mut kdf = kdf.sequence()?;
    let salt = kdf.read(OCTET_STRING)?;
    let iterations = small_uint(kdf.read(INTEGER)?)
        .filter(|n| (1..=MAX_ITERATIONS).contains(n))
        .and_then(NonZeroU32::new)
        .ok_or("the PFX's PBKDF2 iteration count is out of range")?;
    if kdf.peek() == Some(INTEGER) {
        kdf.read(INTEGER)?; // keyLength: the cipher's own.
    }
    let prf = if kdf.is_empty() {
        pbkdf2::PBKDF2_HMAC_SHA1
    } else {
        match kdf.sequence()?.read(OID)? {
            HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
            HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
            _ => return Err("the PFX's PBKDF2 uses an unsupported HMAC".into()),
        }
    };
    let mut cipher = params.sequence()?;
    let (cipher_algorithm, key_len) = match cipher.read(OID)? {
        AES_128_CBC => (&AES_128, 16),
        AES_192_CBC => (&AES_192, 24),
        AES_256_CBC => (&AES_256, 32),
        _ => return Err("the PFX's cipher is not AES-CBC".into()),
    };
    let iv: [u8; 16] = cipher
        .read(OCTET_STRING)?
        .try_into()
        .map_err(|_| "the PFX's AES IV is not 16 bytes")?;
    let mut key = [0u8; 32];
    pbkdf2::derive(
        prf,
        iterations,
        salt,
        password.as_bytes(),
        &mut key[..key_len],
    );
    let wrong = || "cannot decrypt the PFX: wrong password".to_owned();
    let key = UnboundCipherKey::new(cipher_algorithm, &key[..key_len]).map_err(|_| wrong())?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| wrong())?;
    let mut buffer = encrypted.to_vec();
    let plain = key
        .decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| wrong())?;
    let plain = plain.to_vec();
    // Whatever decrypted must be DER, or the password was wrong.
    Reader::new(&plain)
        .read_tlv(SEQUENCE)
        .map_err(|_| wrong())?;
    Ok(plain)
}

/// A non-negative DER INTEGER's value, if it fits 32 bits.
fn small_uint(content: &[u8]) -> Option<u32> {
    let content = match content {
        [0, rest @ ..] => rest,
        [first, ..] if first & 0x80 != 0 => return None,
        _ => content,
    };
    (content.len() <= 4).then(|| content.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

/// A cursor over DER: one tag-length-value at a time.
#[derive(Clone, Copy)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(der: &'a [u8]) -> Self {
        Self { rest: der }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, which must have tag `tag`: (its content, the whole TLV).
    fn next(&mut self, tag: u8) -> Result<(&'a [u8], &'a [u8]), String> {
        let malformed = || "not a PKCS#12 file (malformed DER)".to_owned();
        let (&found, after_tag) = self.rest.split_first().ok_or_else(malformed)?;
        if found != tag {
            return Err(malformed());
        }
        let (&first, after_len) = after_tag.split_first().ok_or_else(malformed)?;
        let (len, after_len) = match first {
            0x80 => {
                return Err(
                    "the PFX uses BER indefinite lengths: re-export it as DER (openssl pkcs12)"
                        .into(),
                );
            }
            n if n < 0x80 => (usize::from(n), after_len),
            n => {
                let count = usize::from(n & 0x7f);
                if count > 4 || after_len.len() < count {
                    return Err(malformed());
                }
                let (bytes, rest) = after_len.split_at(count);
                let len = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
                (len, rest)
            }
        };
        if after_len.len() < len {
            return Err(malformed());
        }
        let header = self.rest.len() - after_len.len();
        let whole = &self.rest[..header + len];
        let content = &after_len[..len];
        self.rest = &after_len[len..];
        Ok((content, whole))
    }

    fn read(&mut self, tag: u8) -> Result<&'a [u8], String> {
        self.next(tag).map(|(content, _)| content)
    }

    fn read_tlv(&mut self, tag: u8) -> Result<&'a [u8], String> {
        self.next(tag).map(|(_, whole)| whole)
    }

    fn sequence(&mut self) -> Result<Reader<'a>, String> {
        self.read(SEQUENCE).map(Reader::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_tags() {
        let der = [0x30, 0x81, 0x03, 0x02, 0x01, 0x07, 0x04, 0x00];
        let mut r = Reader::new(&der);
        let mut seq = r.sequence().unwrap();
        assert_eq!(seq.read(INTEGER).unwrap(), [7]);
        assert!(seq.is_empty());
        assert_eq!(r.read(OCTET_STRING).unwrap(), [] as [u8; 0]);
        assert!(r.is_empty());
        assert!(
            Reader::new(&[0x30, 0x05, 0x00]).sequence().is_err(),
            "too short"
        );
        assert!(Reader::new(&[0x31, 0x00]).sequence().is_err(), "wrong tag");
        let indefinite = Reader::new(&[0x30, 0x80, 0x00, 0x00]).sequence();
        assert!(indefinite.err().unwrap().contains("indefinite"));
    }

    #[test]
    fn integers() {
        assert_eq!(small_uint(&[0x08, 0x00]), Some(2048));
        assert_eq!(small_uint(&[0x00, 0x80]), Some(128));
        assert_eq!(small_uint(&[0x80]), None, "negative");
        assert_eq!(small_uint(&[1, 0, 0, 0, 0]), None, "too big");
    }

    #[test]
    fn not_a_pfx() {
        assert!(parse(b"-----BEGIN CERTIFICATE-----", "").is_err());
        assert!(
            parse(&[0x30, 0x03, 0x02, 0x01, 0x02], "")
                .err()
                .unwrap()
                .contains("version")
        );
    }
}
