//! Running ffprobe and ffmpeg: arguments only (no shell), stdin closed, the process killed when
//! its job is stopped (timeout, cancel, shutdown) or its handle dropped, and stderr reduced to a
//! short summary with the input's URL (and so its SAS) taken out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use super::plan::Probe;
use crate::source::MediaInput;

/// Most stderr kept from one run (its tail is what explains a failure).
const STDERR_KEPT: usize = 16 * 1024;
/// ffprobe answers within this, or the input is not worth waiting for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The two binaries.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

/// Why a run stopped before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Canceled,
    TimedOut,
    /// The replica is shutting down, or lost the job's lease.
    Abandoned,
}

/// A failed run, as the job's error shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

/// What ended a run other than success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    Stopped(Stop),
    Failed(Failure),
}

impl Tools {
    /// `ffmpeg_path`, and ffprobe: as configured, else beside ffmpeg, else on PATH. Both must
    /// be executable files (found without running them: start-up stays fast).
    pub fn find(ffmpeg: &Path, ffprobe: Option<&Path>) -> Result<Self, String> {
        let ffprobe = match ffprobe {
            Some(p) => p.to_path_buf(),
            None => match ffmpeg.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) => dir.join("ffprobe"),
                None => PathBuf::from("ffprobe"),
            },
        };
        let ffmpeg = executable(ffmpeg).ok_or_else(|| {
            format!(
                "ffmpeg was not found ({}); install it (the runtime-ffmpeg image has it) or set jobs.ffmpeg_path",
                ffmpeg.display()
            )
        })?;
        let ffprobe = executable(&ffprobe).ok_or_else(|| {
            format!(
                "ffprobe was not found ({}); it comes with ffmpeg, or set jobs.ffprobe_path",
                ffprobe.display()
            )
        })?;
        Ok(Self { ffmpeg, ffprobe })
    }

    /// The input's duration and picture size.
    pub async fn probe(&self, input: &MediaInput) -> Result<Probe, Failure> {
        let mut command = Command::new(&self.ffprobe);
        command.args(["-v", "error", "-protocol_whitelist", input.protocols]);
        if input.protocols.contains("tls") {
            command.args(["-tls_verify", "1"]);
            if let Some(ca) = &input.ca_file {
                command.arg("-ca_file").arg(ca);
            }
        }
        command
            .args([
                "-select_streams",
                "v:0",
                "-show_entries",
                "format=duration:stream=width,height",
                "-of",
                "json",
                "-i",
            ])
            .arg(&input.target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(PROBE_TIMEOUT, command.output())
            .await
            .map_err(|_| Failure {
                code: "InputUnreadable",
                message: "ffprobe did not answer within 60 s".into(),
            })?
            .map_err(|e| Failure {
                code: "EncoderUnavailable",
                message: format!("ffprobe cannot run: {}", e.kind()),
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(classify(&summarise(&stderr, &input.target), "ffprobe"));
        }
        #[derive(serde::Deserialize)]
        struct Out {
            #[serde(default)]
            streams: Vec<Stream>,
            format: Option<Format>,
        }
        #[derive(serde::Deserialize)]
        struct Stream {
            width: Option<u32>,
            height: Option<u32>,
        }
        #[derive(serde::Deserialize)]
        struct Format {
            duration: Option<String>,
        }
        let out: Out = serde_json::from_slice(&output.stdout).map_err(|_| Failure {
            code: "ContentMalformed",
            message: "ffprobe's answer is not understood".into(),
        })?;
        let stream = out.streams.first().ok_or_else(|| Failure {
            code: "ContentMalformed",
            message: "the input has no video stream".into(),
        })?;
        let duration = out
            .format
            .and_then(|f| f.duration)
            .and_then(|d| d.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        Ok(Probe {
            duration,
            width: stream.width.unwrap_or(0),
            height: stream.height.unwrap_or(0),
        })
    }

    /// Runs ffmpeg with `args` (the input's URL among them: `secret` is scrubbed from any
    /// message); `progress` gets the seconds of input done; `stop` ends the run early.
    pub async fn run(
        &self,
        args: &[String],
        secret: &str,
        mut progress: impl FnMut(f64),
        mut stop: watch::Receiver<Option<Stop>>,
    ) -> Result<(), RunError> {
        let mut child = Command::new(&self.ffmpeg)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                RunError::Failed(Failure {
                    code: "EncoderUnavailable",
                    message: format!("ffmpeg cannot run: {}", e.kind()),
                })
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        // The tail of stderr, read aside so that a chatty ffmpeg never blocks on a full pipe.
        let stderr_task = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEPT {
                    kept.drain(..kept.len() - STDERR_KEPT);
                }
            }
            kept
        });
        let mut lines = BufReader::new(stdout).lines();
        let stopped = loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Some(us) = line.strip_prefix("out_time_us=")
                            && let Ok(us) = us.trim().parse::<i64>()
                            && us >= 0
                        {
                            progress(us as f64 / 1e6);
                        }
                    }
                    _ => break None,
                },
                changed = stop.changed() => {
                    let reason = match changed {
                        Ok(()) => stop.borrow().clone(),
                        // The job's owner is gone: nobody will use the output.
                        Err(_) => Some(Stop::Abandoned),
                    };
                    if let Some(reason) = reason {
                        break Some(reason);
                    }
                }
            }
        };
        if let Some(reason) = stopped {
            let _ = child.kill().await;
            stderr_task.abort();
            return Err(RunError::Stopped(reason));
        }
        let status = child.wait().await.map_err(|e| {
            RunError::Failed(Failure {
                code: "EncoderFailed",
                message: format!("ffmpeg could not be waited for: {}", e.kind()),
            })
        })?;
        let kept = stderr_task.await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let summary = summarise(&String::from_utf8_lossy(&kept), secret);
        Err(RunError::Failed(classify(&summary, "ffmpeg")))
    }
}

/// The executable file a command name or path means (a bare name is looked up on PATH).
fn executable(tool: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.components().count() > 1 {
        return runnable(tool).then(|| tool.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| runnable(p))
}

/// The last lines of stderr, one line, without the input's URL or any SAS-looking query.
fn summarise(stderr: &str, secret: &str) -> String {
    let mut text = stderr.to_owned();
    if !secret.is_empty() {
        text = text.replace(secret, "<input>");
        if let Some(base) = secret.split('?').next()
            && !base.is_empty()
        {
            text = text.replace(base, "<input>");
        }
    }
    // Anything else that looks like a query string with a signature.
    let lines: Vec<String> = text
        .lines()
        .map(|l| match l.find("sig=").or_else(|| l.find("?sv=")) {
            Some(i) => format!("{}<redacted>", &l[..i]),
            None => l.to_owned(),
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    crate::source::rest::text(&tail, 400)
}

/// A code for a summary: a file that is not a video is `ContentMalformed` (as AMS names it).
fn classify(summary: &str, tool: &str) -> Failure {
    let lower = summary.to_ascii_lowercase();
    let code = if lower.contains("invalid data found")
        || lower.contains("moov atom not found")
        || lower.contains("no video stream")
        || lower.contains("does not contain any stream")
        || lower.contains("output file is empty")
        || lower.contains("error opening input")
        || lower.contains("could not find codec")
    {
        "ContentMalformed"
    } else if lower.contains("server returned")
        || lower.contains("connection refused")
        || lower.contains("protocol not on whitelist")
        || lower.contains("no such file")
    {
        "InputUnreadable"
    } else {
        "EncoderFailed"
    };
    let message = if summary.is_empty() {
        format!("{tool} failed without a message")
    } else {
        format!("{tool}: {summary}")
    };
    Failure { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_never_carry_the_input_url_or_a_signature() {
        let url = "https://acct.blob.core.windows.net/c/v.mp4?sv=2025&sig=SECRET%3D";
        let stderr = format!(
            "[mov,mp4 @ 0x1] moov atom not found\n{url}: Invalid data found when processing input\nother https://x/y?a=1&sig=ZZZ\n"
        );
        let s = summarise(&stderr, url);
        assert!(
            !s.contains("SECRET") && !s.contains("ZZZ") && !s.contains("acct"),
            "{s}"
        );
        assert!(s.contains("<input>: Invalid data found"), "{s}");
        assert_eq!(classify(&s, "ffmpeg").code, "ContentMalformed");
        assert_eq!(
            classify("Server returned 403 Forbidden (access denied)", "ffprobe").code,
            "InputUnreadable"
        );
        assert_eq!(
            classify("", "ffmpeg").message,
            "ffmpeg failed without a message"
        );
    }
}
