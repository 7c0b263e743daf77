//! Figment layers of our own: a file layer without its `[source]` table, and errors blamed on
//! the layer that really set the offending key.

use figment::value::{Dict, Map};
use figment::{Error, Figment, Metadata, Profile, Provider};

/// A layer whose `source` table is dropped when `drop` is set (a higher layer chose another
/// source kind); its metadata stays, so errors still name the file.
pub(super) struct WithoutSource<P> {
    pub(super) inner: P,
    pub(super) drop: bool,
}

impl<P: Provider> Provider for WithoutSource<P> {
    fn metadata(&self) -> Metadata {
        self.inner.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.inner.data()?;
        if self.drop {
            for dict in data.values_mut() {
                dict.remove("source");
            }
        }
        Ok(data)
    }
}

/// `error` with each unknown field blamed on the layer that set that field: figment blames
/// the layer that last touched the table (`AMS_THUMBNAILS_SOURCE__KIND` for a typo in the
/// file's `[source]`).
pub(super) fn blame(figment: &Figment, error: Error) -> Error {
    let mut out: Option<Error> = None;
    for mut e in error {
        if let figment::error::Kind::UnknownField(field, _) = &e.kind {
            let mut path = e.path.clone();
            path.push(field.clone());
            if let Some(metadata) = figment.find_metadata(&path.join(".")) {
                e.metadata = Some(metadata.clone());
            }
        }
        out = Some(match out {
            None => e,
            Some(prev) => prev.chain(e),
        });
    }
    out.expect("an error has at least one part")
}
