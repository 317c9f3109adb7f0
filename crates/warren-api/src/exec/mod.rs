//! Command execution on the data plane: WebSocket (§4.4, the SDKs' default), SSE (§4.5) and
//! blocking HTTP (§4.6). Each is framing over the control plane's command stream
//! ([`warren_control::CommandStream`]); the command's defaults, audit and metrics are the
//! control plane's.

mod http;
mod sse;
mod ws;

pub(crate) use http::http;
pub(crate) use sse::{sse_resume, sse_start};
use warren_control::{ExecRequest, PtySize};
use warren_wire::exec::ExecuteBody;
pub(crate) use ws::ws;

/// The control plane's request for an `execute` body. The transports that have no stdin (SSE,
/// blocking HTTP) override what they cannot carry.
pub(crate) fn exec_request(body: ExecuteBody) -> ExecRequest {
    let pty = body.pty.unwrap_or(false);
    ExecRequest {
        command: body.command,
        command_id: body.command_id,
        shell: body.shell,
        timeout_seconds: body.timeout_seconds.or(body.timeout),
        idle_timeout_seconds: body.idle_timeout_seconds,
        ttl_seconds: body.ttl_seconds,
        kill_on_disconnect: body.kill_on_disconnect.unwrap_or(false),
        run_config: body.run_config,
        env: body.env,
        cwd: body.cwd,
        stdin: !body.close_stdin.unwrap_or(false),
        pty: pty.then(PtySize::default),
        blocking: false,
    }
}
