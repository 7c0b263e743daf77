//! Thumbnail recognition: which blobs of a container are thumbnails, with which index, label,
//! size and time. The grammar is AMS's own `filenamePattern` macros.
//!
//! A name can often be read several ways (`big_buck_bunny_000001.jpg` fits both
//! `{Basename}_{Index}` and `{Basename}_{Label}_{Index}`), so each image gets every reading the
//! patterns allow and the container decides: a reading whose `{Basename}` is the stem of a
//! video or manifest next to it wins, a `{Label}` reading needs a sibling with another label of
//! the same basename (or a known basename), and pattern order breaks ties.

pub mod vtt;

use std::collections::{HashMap, HashSet};

use regex::Regex;

use crate::config::{Invalid, LayerSize, RecognitionSettings, Timing};
use crate::model::{BlobEntry, StoryboardTile};
pub use vtt::ParsedStoryboard;

/// AMS truncates `{Basename}` to this many characters.
const BASENAME_MAX: usize = 32;

/// A thumbnail as recognised, before it gets a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognised {
    pub blob: BlobEntry,
    pub index: u64,
    pub label: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub time: Option<f64>,
}

/// The storyboard of a container, before its sprite gets a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognisedStoryboard {
    pub sprite: BlobEntry,
    pub vtt_name: String,
    pub tiles: Vec<StoryboardTile>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recognition {
    pub thumbnails: Vec<Recognised>,
    pub storyboard: Option<RecognisedStoryboard>,
}

#[derive(Debug, Clone)]
struct Pattern {
    regex: Regex,
    /// Whether the pattern spans folders (contains `/`) and so matches the full blob name.
    full_name: bool,
}

/// Compiled recognition settings.
#[derive(Debug, Clone)]
pub struct Recogniser {
    patterns: Vec<Pattern>,
    extensions: Vec<String>,
    layers: Vec<LayerSize>,
    timing: Option<Timing>,
}

#[derive(Debug, Clone)]
struct Reading {
    pattern: usize,
    basename: Option<String>,
    label: Option<String>,
    index: u64,
    resolution: Option<(u32, u32)>,
}

impl Recogniser {
    pub fn new(settings: &RecognitionSettings) -> Result<Self, Invalid> {
        if settings.patterns.is_empty() {
            return Err(Invalid {
                key: "recognition.patterns".into(),
                message: "at least one pattern is needed".into(),
            });
        }
        let patterns = settings
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                compile(p).map_err(|message| Invalid {
                    key: format!("recognition.patterns[{i}]"),
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        let mut extensions = Vec::new();
        for (i, e) in settings.extensions.iter().enumerate() {
            let e = e.trim_start_matches('.').to_ascii_lowercase();
            if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Invalid {
                    key: format!("recognition.extensions[{i}]"),
                    message: "must be letters and digits, like \"jpg\"".into(),
                });
            }
            extensions.push(e);
        }
        Ok(Self {
            patterns,
            extensions,
            layers: settings.layers.clone(),
            timing: settings.timing,
        })
    }

    /// Whether the name has one of the image extensions.
    pub fn is_image(&self, name: &str) -> bool {
        extension(name).is_some_and(|e| self.extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
    }

    /// Recognises the thumbnails among `blobs`, given the storyboards parsed from its VTT files.
    pub fn recognise(
        &self,
        blobs: &[BlobEntry],
        storyboards: &[(String, ParsedStoryboard)],
    ) -> Recognition {
        let storyboard = storyboards.iter().find_map(|(vtt_name, sb)| {
            let sprite = blobs.iter().find(|b| b.name == sb.sprite_name)?;
            Some(RecognisedStoryboard {
                sprite: sprite.clone(),
                vtt_name: vtt_name.clone(),
                tiles: sb.tiles.clone(),
            })
        });
        let sprite_names: HashSet<&str> = storyboards
            .iter()
            .map(|(_, sb)| sb.sprite_name.as_str())
            .collect();

        let stems = known_stems(blobs, self);
        let images: Vec<(&BlobEntry, Vec<Reading>)> = blobs
            .iter()
            .filter(|b| self.is_image(&b.name) && !sprite_names.contains(b.name.as_str()))
            .map(|b| (b, self.readings(&b.name)))
            .filter(|(_, r)| !r.is_empty())
            .collect();

        // (folder, basename) -> labels seen: a label reading is plausible when siblings share
        // the basename with other labels (a preset with several layers).
        let mut labels: HashMap<(String, String), HashSet<String>> = HashMap::new();
        for (blob, readings) in &images {
            for r in readings {
                if let (Some(b), Some(l)) = (&r.basename, &r.label) {
                    labels
                        .entry((folder(&blob.name).to_owned(), b.clone()))
                        .or_default()
                        .insert(l.clone());
                }
            }
        }

        let mut thumbnails: Vec<Recognised> = images
            .into_iter()
            .filter_map(|(blob, readings)| {
                let best = readings
                    .into_iter()
                    .map(|r| {
                        let known = r.basename.as_deref().map_or(0, |b| stems.score(b));
                        let label_ok = match (&r.basename, &r.label) {
                            (Some(b), Some(_)) => {
                                known > 0
                                    || labels
                                        .get(&(folder(&blob.name).to_owned(), b.clone()))
                                        .is_some_and(|s| s.len() > 1)
                            }
                            _ => true,
                        };
                        (r, known, label_ok)
                    })
                    // Higher is better: plausible labels, known basename, earlier pattern.
                    .max_by_key(|(r, known, label_ok)| {
                        (*label_ok, *known, std::cmp::Reverse(r.pattern))
                    })?;
                Some(self.finish(blob, best.0, storyboard.as_ref()))
            })
            .collect();
        thumbnails.sort_by(|a, b| {
            a.index
                .cmp(&b.index)
                .then_with(|| a.label.cmp(&b.label))
                .then_with(|| a.blob.name.cmp(&b.blob.name))
        });
        Recognition {
            thumbnails,
            storyboard,
        }
    }

    fn readings(&self, name: &str) -> Vec<Reading> {
        let file = name.rsplit('/').next().unwrap_or(name);
        self.patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let caps = p.regex.captures(if p.full_name { name } else { file })?;
                // AMS indices start at 1: `000000` is not one of its names.
                let index = caps
                    .name("index")?
                    .as_str()
                    .parse()
                    .ok()
                    .filter(|i| *i > 0)?;
                let resolution = match (caps.name("width"), caps.name("height")) {
                    (Some(w), Some(h)) => {
                        let size: (u32, u32) = (w.as_str().parse().ok()?, h.as_str().parse().ok()?);
                        (size.0 > 0 && size.1 > 0).then_some(size)
                    }
                    _ => None,
                };
                Some(Reading {
                    pattern: i,
                    basename: caps.name("basename").map(|m| m.as_str().to_owned()),
                    label: caps.name("label").map(|m| m.as_str().to_owned()),
                    index,
                    resolution,
                })
            })
            .collect()
    }

    fn finish(
        &self,
        blob: &BlobEntry,
        r: Reading,
        storyboard: Option<&RecognisedStoryboard>,
    ) -> Recognised {
        // The file's own header beats the name, which beats the configured layer size.
        let layer = r
            .label
            .as_deref()
            .and_then(|l| self.layers.iter().find(|x| x.label == l))
            .map(|x| (x.width, x.height));
        let (width, height) = blob
            .dimensions
            .or(r.resolution)
            .or(layer)
            .map_or((None, None), |(w, h)| (Some(w), Some(h)));
        let time = storyboard
            .and_then(|sb| {
                usize::try_from(r.index)
                    .ok()
                    .and_then(|i| sb.tiles.get(i.checked_sub(1)?))
            })
            .map(|tile| tile.start)
            .or_else(|| {
                self.timing.map(|t| {
                    t.start.as_secs_f64()
                        + t.step.as_secs_f64() * (r.index.saturating_sub(1)) as f64
                })
            });
        Recognised {
            blob: blob.clone(),
            index: r.index,
            label: r.label,
            width,
            height,
            time,
        }
    }
}

/// Turns an AMS filenamePattern into an anchored regex.
fn compile(pattern: &str) -> Result<Pattern, String> {
    let mut re = String::from("^");
    let mut rest = pattern;
    let mut seen = HashSet::new();
    while let Some(open) = rest.find('{') {
        re.push_str(&regex::escape(&rest[..open]));
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed macro in {pattern:?}"))?
            + open;
        let name = &rest[open + 1..close];
        if !seen.insert(name.to_owned()) {
            return Err(format!("macro {{{name}}} appears twice in {pattern:?}"));
        }
        re.push_str(match name {
            // MK.IO names the same macro {BaseFilename}.
            "Basename" | "BaseFilename" => {
                if !seen.insert("Basename".to_owned()) && name == "BaseFilename" {
                    return Err(format!(
                        "{{Basename}} and {{BaseFilename}} together in {pattern:?}"
                    ));
                }
                r"(?P<basename>[^/]+)"
            }
            "Index" => r"(?P<index>[0-9]{6,18})",
            "Label" => r"(?P<label>[^_/]+)",
            "Resolution" => r"(?P<width>[0-9]{1,5})x(?P<height>[0-9]{1,5})",
            "Extension" => r"\.[A-Za-z0-9]+",
            "Bitrate" | "Codec" | "AudioStream" => {
                return Err(format!(
                    "macro {{{name}}} does not apply to thumbnails (in {pattern:?})"
                ));
            }
            other => return Err(format!("unknown macro {{{other}}} in {pattern:?}")),
        });
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray '}}' in {pattern:?}"));
    }
    re.push_str(&regex::escape(rest));
    re.push('$');
    if !seen.contains("Index") {
        return Err(format!(
            "{pattern:?} has no {{Index}}: thumbnails are told apart by their index"
        ));
    }
    Ok(Pattern {
        regex: Regex::new(&re).map_err(|e| e.to_string())?,
        full_name: pattern.contains('/'),
    })
}

fn extension(name: &str) -> Option<&str> {
    let file = name.rsplit('/').next()?;
    let (stem, ext) = file.rsplit_once('.')?;
    (!stem.is_empty()).then_some(ext)
}

fn folder(name: &str) -> &str {
    name.rfind('/').map_or("", |i| &name[..i])
}

/// Basenames the container vouches for: the stems of its non-image files (`ocean.ism`) score 2,
/// their `_`-separated prefixes (`ocean` of `ocean_1280x720_3000.mp4`) score 1.
struct KnownStems {
    exact: HashSet<String>,
    prefixes: HashSet<String>,
}

impl KnownStems {
    fn score(&self, basename: &str) -> u8 {
        if self.exact.contains(basename) {
            2
        } else if self.prefixes.contains(basename) {
            1
        } else {
            0
        }
    }
}

fn known_stems(blobs: &[BlobEntry], recogniser: &Recogniser) -> KnownStems {
    let mut exact = HashSet::new();
    let mut prefixes = HashSet::new();
    for b in blobs.iter().filter(|b| !recogniser.is_image(&b.name)) {
        let file = b.name.rsplit('/').next().unwrap_or(&b.name);
        let Some((stem, _)) = file.split_once('.') else {
            continue;
        };
        if stem.is_empty() {
            continue;
        }
        exact.insert(truncate(stem));
        for (i, _) in stem.match_indices('_').filter(|(i, _)| *i > 0) {
            prefixes.insert(truncate(&stem[..i]));
        }
    }
    KnownStems { exact, prefixes }
}

fn truncate(s: &str) -> String {
    s.chars().take(BASENAME_MAX).collect()
}

#[cfg(test)]
mod tests;
