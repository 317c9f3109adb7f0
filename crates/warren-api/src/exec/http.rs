//! Blocking HTTP execution (§4.6, the JS SDK's `run`): one request, one JSON answer with both
//! streams, each held up to a cap.

use axum::Json;
use axum::extract::{Path, State};
use warren_control::{ExecEvent, Stream};
use warren_wire::exec::{ExecuteBody, HttpExecuteResponse};

use super::exec_request;
use crate::{ApiError, ApiJson, AppState, Caller};

/// One stream's output of a blocking HTTP execute, kept up to a cap; what is past the cap is
/// counted and dropped.
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
    cap: usize,
}

impl Captured {
    fn new(cap: usize) -> Self {
        Self {
            kept: Vec::new(),
            dropped: 0,
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        let take = data.len().min(room);
        self.kept.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }

    /// The text, with a marker line at the end when output was dropped. A cut that splits a
    /// UTF-8 character drops the partial character rather than showing a replacement.
    fn into_text(mut self) -> (String, bool) {
        if self.dropped == 0 {
            return (String::from_utf8_lossy(&self.kept).into_owned(), false);
        }
        if let Err(e) = std::str::from_utf8(&self.kept)
            && e.error_len().is_none()
        {
            let cut = self.kept.len() - e.valid_up_to();
            self.kept.truncate(e.valid_up_to());
            self.dropped += cut as u64;
        }
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&truncation_marker(self.kept.len(), self.dropped));
        (text, true)
    }
}

/// The line appended to a stream a blocking HTTP execute cut short. §4.6's response has no
/// field for it, so the text says it; `stdout_truncated`/`stderr_truncated` say it to
/// programs.
fn truncation_marker(kept: usize, dropped: u64) -> String {
    format!(
        "[warren: output truncated: {dropped} more bytes after the first {kept} were dropped; \
         use the WebSocket or SSE transport for large output]\n"
    )
}

pub(crate) async fn http(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Json<HttpExecuteResponse>, ApiError> {
    let mut req = exec_request(body);
    req.blocking = true;
    let mut stream = state.control.exec(&caller, &id, req).await?;
    let cap = state.limits.http_output_cap;
    let mut out = [Captured::new(cap), Captured::new(cap)];
    while let Some(event) = stream.next().await {
        match event {
            ExecEvent::Started { .. } => {}
            ExecEvent::Output { stream, data, .. } => {
                out[usize::from(stream == Stream::Stderr)].push(&data);
            }
            ExecEvent::Exit { code, .. } => {
                let [stdout, stderr] = out;
                let (stdout, stdout_truncated) = stdout.into_text();
                let (stderr, stderr_truncated) = stderr.into_text();
                return Ok(Json(HttpExecuteResponse {
                    stdout,
                    stderr,
                    exit_code: code,
                    stdout_truncated,
                    stderr_truncated,
                }));
            }
            ended => {
                return Err(ended.into_error().map_or_else(
                    || ApiError::internal(&"command ended without an exit"),
                    ApiError::from,
                ));
            }
        }
    }
    Err(ExecEvent::Lost.into_error().map_or_else(
        || ApiError::internal(&"command stream ended"),
        ApiError::from,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_capture_keeps_the_cap_and_says_what_it_dropped() {
        let mut c = Captured::new(10);
        c.push(b"0123456");
        c.push(b"789abcdef");
        let (text, truncated) = c.into_text();
        assert!(truncated);
        assert!(
            text.starts_with("0123456789\n[warren: output truncated: 6 more bytes"),
            "{text}"
        );
        let mut c = Captured::new(10);
        c.push(b"short");
        assert_eq!(c.into_text(), ("short".to_owned(), false));
        // A cut inside a multi-byte character drops the partial character.
        let mut c = Captured::new(4);
        c.push("abcé".as_bytes());
        let (text, truncated) = c.into_text();
        assert!(
            truncated && text.starts_with("abc\n[warren: output truncated: 2 more bytes"),
            "{text}"
        );
    }
}
