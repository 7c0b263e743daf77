//! The OData pieces both fake media APIs (ARM, MK.IO) read the same way: the asset `$filter`
//! forms the service sends, and the opaque `$skiptoken` of their `@odata.nextLink`s.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

/// The `$filter` forms AMS documents for assets (MK.IO takes the same), that the service uses.
#[derive(Debug, PartialEq)]
pub enum Filter {
    Name(String),
    AlternateId(String),
    AssetId(Uuid),
}

/// `name eq 'x'`, `properties/alternateId eq 'x'` (OData string, `''` escapes `'`),
/// `properties/assetId eq <guid>` (bare, `'quoted'` or `guid'...'`). `fake` names the fake in
/// the message for other forms ("fake ARM").
pub fn parse_filter(filter: &str, fake: &str) -> Result<Filter, String> {
    let unsupported = || {
        format!(
            "The $filter '{filter}' is not supported: the {fake} knows `name eq '..'`, \
             `properties/alternateId eq '..'` and `properties/assetId eq <guid>`."
        )
    };
    let mut parts = filter.trim().splitn(3, char::is_whitespace);
    let (Some(property), Some("eq"), Some(literal)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unsupported());
    };
    let literal = literal.trim();
    let string_literal = || {
        literal
            .strip_prefix('\'')
            .and_then(|l| l.strip_suffix('\''))
            .filter(|inner| !inner.replace("''", "").contains('\''))
            .map(|inner| inner.replace("''", "'"))
            .ok_or_else(|| format!("Invalid OData string literal {literal} in $filter."))
    };
    match property {
        "name" => Ok(Filter::Name(string_literal()?)),
        "properties/alternateId" => Ok(Filter::AlternateId(string_literal()?)),
        "properties/assetId" => {
            let guid = literal.strip_prefix("guid").unwrap_or(literal);
            let guid = guid
                .strip_prefix('\'')
                .and_then(|g| g.strip_suffix('\''))
                .unwrap_or(guid);
            Uuid::parse_str(guid)
                .map(Filter::AssetId)
                .map_err(|_| format!("Invalid GUID {literal} in $filter."))
        }
        _ => Err(unsupported()),
    }
}

/// Opaque to clients (ARM's are), readable here: the offset, and whether the link loops.
pub fn encode_skiptoken(offset: usize, looping: bool) -> String {
    let kind = if looping { "loop" } else { "next" };
    URL_SAFE_NO_PAD.encode(format!("{kind}:{offset}"))
}

pub fn decode_skiptoken(token: &str) -> Result<(usize, bool), String> {
    let invalid = || format!("Invalid $skiptoken '{token}'.");
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let (kind, offset) = text.split_once(':').ok_or_else(invalid)?;
    let offset = offset.parse().map_err(|_| invalid())?;
    match kind {
        "next" => Ok((offset, false)),
        "loop" => Ok((offset, true)),
        _ => Err(invalid()),
    }
}
