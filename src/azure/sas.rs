//! Service SAS signed with the storage account key (HMAC-SHA256), and the one account SAS the
//! service makes (listing containers, `catalog scan`). The Azure SDK for Rust has
//! no Shared Key and no service-SAS signer, so this one is ours.
//!
//! String to sign for signed versions 2020-12-06 and later: sixteen fields joined by `\n`
//! (`sp, st, se, canonicalizedResource, si, sip, spr, sv, sr, snapshotTime, ses, rscc, rscd,
//! rsce, rscl, rsct`), empty strings for absent fields, no trailing newline.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::form_urlencoded;

use crate::secret::Secret;

/// The signed version (`sv`) of the SAS this service emits.
pub const SAS_VERSION: &str = "2025-05-05";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasProtocol {
    /// `spr=https`: the only choice against real Azure.
    Https,
    /// `spr=https,http`: only for an emulator reached over plain HTTP.
    HttpsAndHttp,
}

impl SasProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SasProtocol::Https => "https",
            SasProtocol::HttpsAndHttp => "https,http",
        }
    }
}

/// What a SAS grants access to.
#[derive(Debug, Clone, Copy)]
pub enum SasResource<'a> {
    /// One blob (`sr=b`).
    Blob { container: &'a str, blob: &'a str },
    /// A whole container (`sr=c`).
    Container { container: &'a str },
}

#[derive(Debug, thiserror::Error)]
#[error("the storage account key is not valid base64")]
pub struct InvalidAccountKey;

/// Signs service SAS tokens with one account's key.
#[derive(Clone)]
pub struct AccountKeySigner {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for AccountKeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKeySigner")
            .field("account", &self.account)
            .field("key", &crate::secret::REDACTED)
            .finish()
    }
}

impl AccountKeySigner {
    pub fn new(account: &str, key: &Secret) -> Result<Self, InvalidAccountKey> {
        let key = B64
            .decode(key.expose().trim())
            .map_err(|_| InvalidAccountKey)?;
        if key.is_empty() {
            return Err(InvalidAccountKey);
        }
        Ok(Self {
            account: account.to_owned(),
            key,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The SAS query string (without `?`): permissions `sp`, valid from `start` to `expiry`;
    /// `cache_control` (`rscc`) is the `Cache-Control` Storage answers with. The same arguments
    /// always give the same bytes.
    pub fn sign(
        &self,
        resource: SasResource<'_>,
        permissions: &str,
        start: Option<OffsetDateTime>,
        expiry: OffsetDateTime,
        protocol: SasProtocol,
        cache_control: Option<&str>,
    ) -> String {
        let (canonical, sr) = match resource {
            SasResource::Blob { container, blob } => {
                (format!("/blob/{}/{container}/{blob}", self.account), "b")
            }
            SasResource::Container { container } => {
                (format!("/blob/{}/{container}", self.account), "c")
            }
        };
        let st = start.map(format_time).unwrap_or_default();
        let se = format_time(expiry);
        let spr = protocol.as_str();
        let rscc = cache_control.unwrap_or_default();
        let string_to_sign = [
            permissions,
            &st,
            &se,
            &canonical,
            "", // si: no stored access policy
            "", // sip
            spr,
            SAS_VERSION,
            sr,
            "", // snapshot time
            "", // ses: encryption scope
            rscc,
            "", // rscd
            "", // rsce
            "", // rscl
            "", // rsct
        ]
        .join("\n");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(string_to_sign.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());

        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("sv", SAS_VERSION);
        if !st.is_empty() {
            query.append_pair("st", &st);
        }
        query
            .append_pair("se", &se)
            .append_pair("sr", sr)
            .append_pair("sp", permissions)
            .append_pair("spr", spr);
        if !rscc.is_empty() {
            query.append_pair("rscc", rscc);
        }
        query.append_pair("sig", &sig);
        query.finish()
    }
}

impl AccountKeySigner {
    /// An account SAS that lists the blob service's containers and nothing else (`ss=b`,
    /// `srt=s`, `sp=l`), valid until `expiry`: `catalog scan`. String to sign (2020-12-06 and
    /// later): `account, sp, ss, srt, st, se, sip, spr, sv, ses`, each followed by `\n`.
    pub fn sign_container_listing(&self, expiry: OffsetDateTime, protocol: SasProtocol) -> String {
        let se = format_time(expiry);
        let spr = protocol.as_str();
        let string_to_sign = [
            self.account.as_str(),
            "l", // sp
            "b", // ss
            "s", // srt
            "",  // st
            &se,
            "", // sip
            spr,
            SAS_VERSION,
            "", // ses
        ]
        .iter()
        .fold(String::new(), |mut out, field| {
            out.push_str(field);
            out.push('\n');
            out
        });
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(string_to_sign.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        form_urlencoded::Serializer::new(String::new())
            .append_pair("sv", SAS_VERSION)
            .append_pair("ss", "b")
            .append_pair("srt", "s")
            .append_pair("sp", "l")
            .append_pair("se", &se)
            .append_pair("spr", spr)
            .append_pair("sig", &sig)
            .finish()
    }
}

/// SAS times: UTC, whole seconds, `Z` (`2026-11-28T16:00:00Z`).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    t.format(&Rfc3339).expect("UTC times format")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn signer() -> AccountKeySigner {
        AccountKeySigner::new("devstoreaccount1", &Secret::new(AZURITE_KEY)).unwrap()
    }

    fn param(query: &str, key: &str) -> Option<String> {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    #[test]
    fn blob_sas_has_least_privilege_fields() {
        let q = signer().sign(
            SasResource::Blob {
                container: "asset-1",
                blob: "thumbs/Thumbnail 000001.jpg",
            },
            "r",
            Some(datetime!(2026-11-28 10:00:00 UTC)),
            datetime!(2026-11-28 11:00:00.750 UTC),
            SasProtocol::Https,
            None,
        );
        assert_eq!(param(&q, "sp").as_deref(), Some("r"));
        assert_eq!(param(&q, "sr").as_deref(), Some("b"));
        assert_eq!(param(&q, "spr").as_deref(), Some("https"));
        assert_eq!(param(&q, "sv").as_deref(), Some(SAS_VERSION));
        assert_eq!(param(&q, "st").as_deref(), Some("2026-11-28T10:00:00Z"));
        assert_eq!(param(&q, "se").as_deref(), Some("2026-11-28T11:00:00Z"));
        assert!(param(&q, "sig").is_some());
    }

    #[test]
    fn signature_matches_an_independent_computation() {
        // HMAC-SHA256 over the 16-field string, computed by hand from the documented layout.
        let expiry = datetime!(2030-01-01 00:00:00 UTC);
        let q = signer().sign(
            SasResource::Container { container: "c1" },
            "l",
            None,
            expiry,
            SasProtocol::HttpsAndHttp,
            None,
        );
        let sts = format!(
            "l\n\n2030-01-01T00:00:00Z\n/blob/devstoreaccount1/c1\n\n\nhttps,http\n{SAS_VERSION}\nc\n\n\n\n\n\n\n"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&B64.decode(AZURITE_KEY).unwrap()).unwrap();
        mac.update(sts.as_bytes());
        let expected = B64.encode(mac.finalize().into_bytes());
        assert_eq!(param(&q, "sig").as_deref(), Some(expected.as_str()));
        assert_eq!(sts.split('\n').count(), 16);
    }

    #[test]
    fn rscc_is_signed_and_sent() {
        let sign = |cc: Option<&str>| {
            signer().sign(
                SasResource::Blob {
                    container: "c1",
                    blob: "a.jpg",
                },
                "r",
                Some(datetime!(2030-01-01 00:00:00 UTC)),
                datetime!(2030-01-01 01:00:00 UTC),
                SasProtocol::Https,
                cc,
            )
        };
        let cc = "public, max-age=2700, immutable";
        let q = sign(Some(cc));
        assert_eq!(param(&q, "rscc").as_deref(), Some(cc));
        assert_eq!(q, sign(Some(cc)), "deterministic");
        assert!(param(&sign(None), "rscc").is_none());
        // rscc is the 12th of the 16 fields.
        let sts = format!(
            "r\n2030-01-01T00:00:00Z\n2030-01-01T01:00:00Z\n/blob/devstoreaccount1/c1/a.jpg\n\n\nhttps\n{SAS_VERSION}\nb\n\n\n{cc}\n\n\n\n"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&B64.decode(AZURITE_KEY).unwrap()).unwrap();
        mac.update(sts.as_bytes());
        let expected = B64.encode(mac.finalize().into_bytes());
        assert_eq!(param(&q, "sig").as_deref(), Some(expected.as_str()));
        assert_ne!(param(&q, "sig"), param(&sign(None), "sig"));
    }

    #[test]
    fn bad_keys_are_refused_and_never_printed() {
        assert!(AccountKeySigner::new("a", &Secret::new("not base64!")).is_err());
        assert!(AccountKeySigner::new("a", &Secret::new("")).is_err());
        let debug = format!("{:?}", signer());
        assert!(!debug.contains("Eby8"), "{debug}");
    }
}
