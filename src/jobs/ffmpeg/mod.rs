//! ffmpeg.
