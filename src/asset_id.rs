//! Asset ids, validated against the AMS resource naming rules before anything else sees them.

use std::fmt;
use std::sync::Arc;

/// Longest asset name AMS accepts.
pub const MAX_LEN: usize = 260;

/// Characters AMS forbids in resource names (besides control characters).
const FORBIDDEN: &[char] = &['<', '>', '%', '&', ':', '\\', '?', '/', '*', '+', '.', '\''];

/// A syntactically valid asset id (an AMS asset name, alternate id or asset GUID).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AssetId(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAssetId {
    #[error("the asset id is empty")]
    Empty,
    #[error("the asset id is {0} characters long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("the asset id contains a control character")]
    Control,
    #[error("the asset id contains {0:?}, which AMS asset names cannot contain (<>%&:\\?/*+.')")]
    Forbidden(char),
    #[error("the asset id has leading or trailing white space")]
    Whitespace,
}

/// ASCII bytes allowed anywhere in an id: visible characters and space, less the forbidden.
const ALLOWED_ASCII: [bool; 128] = {
    let mut allowed = [false; 128];
    let mut c = 0x20;
    while c < 0x7f {
        allowed[c] = true;
        c += 1;
    }
    let mut i = 0;
    while i < FORBIDDEN.len() {
        allowed[FORBIDDEN[i] as usize] = false;
        i += 1;
    }
    allowed
};

impl AssetId {
    pub fn parse(raw: &str) -> Result<Self, InvalidAssetId> {
        Self::validate(raw)?;
        Ok(Self(Arc::from(raw)))
    }

    /// Checks an id without keeping it (no allocation).
    pub fn validate(raw: &str) -> Result<(), InvalidAssetId> {
        // The common case in one pass: short, ASCII, nothing forbidden, no space at either end.
        let bytes = raw.as_bytes();
        if let (Some(&first), Some(&last)) = (bytes.first(), bytes.last())
            && bytes.len() <= MAX_LEN
            && first != b' '
            && last != b' '
            && bytes.iter().all(|&b| b < 0x80 && ALLOWED_ASCII[b as usize])
        {
            return Ok(());
        }
        Self::validate_slowly(raw)
    }

    fn validate_slowly(raw: &str) -> Result<(), InvalidAssetId> {
        if raw.is_empty() {
            return Err(InvalidAssetId::Empty);
        }
        let len = raw.chars().count();
        if len > MAX_LEN {
            return Err(InvalidAssetId::TooLong(len));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            let _ = c;
            return Err(InvalidAssetId::Control);
        }
        if let Some(c) = raw.chars().find(|c| FORBIDDEN.contains(c)) {
            return Err(InvalidAssetId::Forbidden(c));
        }
        if raw.trim() != raw {
            return Err(InvalidAssetId::Whitespace);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared key used by the cache (cloning is a reference-count increment).
    pub fn key(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetId({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_asset_names() {
        for ok in [
            "builtin-preset",
            "asset-1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
            "1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b",
            "My Video (final)_2024",
            "vidéo-été",
            "ClimbingAsset",
            &"a".repeat(MAX_LEN),
        ] {
            assert!(AssetId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!(AssetId::parse(""), Err(InvalidAssetId::Empty));
        assert_eq!(
            AssetId::parse(&"a".repeat(MAX_LEN + 1)),
            Err(InvalidAssetId::TooLong(MAX_LEN + 1))
        );
        assert_eq!(AssetId::parse("a/b"), Err(InvalidAssetId::Forbidden('/')));
        assert_eq!(AssetId::parse(".."), Err(InvalidAssetId::Forbidden('.')));
        assert_eq!(AssetId::parse("a\u{0}b"), Err(InvalidAssetId::Control));
        assert_eq!(AssetId::parse("a\nb"), Err(InvalidAssetId::Control));
        assert_eq!(AssetId::parse("a%2Fb"), Err(InvalidAssetId::Forbidden('%')));
        assert_eq!(AssetId::parse("x:y"), Err(InvalidAssetId::Forbidden(':')));
        assert_eq!(AssetId::parse(" padded"), Err(InvalidAssetId::Whitespace));
        assert_eq!(AssetId::parse("padded "), Err(InvalidAssetId::Whitespace));
        assert_eq!(AssetId::parse("a\u{7f}b"), Err(InvalidAssetId::Control));
    }

    #[test]
    fn the_quick_check_agrees_with_the_full_one() {
        for c in 0u8..0x80 {
            for id in [
                format!("a{}b", c as char),
                format!("{}", c as char),
                format!("{}x", c as char),
                format!("x{}", c as char),
            ] {
                assert_eq!(
                    AssetId::validate(&id),
                    AssetId::validate_slowly(&id),
                    "{id:?}"
                );
            }
        }
        for id in [
            "vidéo-été",
            "a\u{a0}",
            "\u{2003}a",
            &"é".repeat(200),
            &"a".repeat(261),
        ] {
            assert_eq!(
                AssetId::validate(id),
                AssetId::validate_slowly(id),
                "{id:?}"
            );
        }
    }
}
