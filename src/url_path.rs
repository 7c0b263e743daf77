//! Building URL paths from blob names: `/` separates virtual folders and stays, everything else
//! outside RFC 3986's unreserved set is percent-encoded.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters encoded in one path segment (all but unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes one path segment.
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Encodes a blob name, keeping `/` between its segments.
pub fn encode_blob_name(name: &str) -> String {
    name.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_folders_and_encodes_the_rest() {
        assert_eq!(
            encode_blob_name("thumbs/Mon film #2/vidéo 1.jpg"),
            "thumbs/Mon%20film%20%232/vid%C3%A9o%201.jpg"
        );
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
