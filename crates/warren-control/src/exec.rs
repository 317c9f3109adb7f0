//! Running commands: exec, attach (reconnect), and the SSE transport's park and resume. The
//! defaults, the audit entry and the metrics of a command are decided here, once, for every
//! transport.

use std::sync::Arc;

use warren_driver::{CommandOpen, CommandSummary};

use crate::command::{CommandStream, ExecRequest, StreamContext};
use crate::control::{Control, detached};
use crate::error::ControlError;
use crate::state::Running;
use crate::store::Principal;

impl Control {
    /// Runs a command in a sandbox the caller may use (waking it if stopped).
    pub async fn exec(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        req: ExecRequest,
    ) -> Result<CommandStream, ControlError> {
        let rec = self.visible_record(p, sandbox_id)?;
        // Variables the credential rules set (dummies for tools that want one) come below
        // the sandbox's own.
        let rules_env = crate::RunConfig {
            env_vars: crate::rule_env_vars(rec.config.proxy_config.as_ref()),
            ..crate::RunConfig::default()
        };
        let mut spec = req.to_spec(&rules_env.layered(&rec.config.command_base()))?;
        let timeout_ms = spec.timeout_ms;
        let running = self.running(&rec.id).await?;
        // What the sandbox's driver gives every command (the egress proxy's address) goes
        // first, so the sandbox's and the command's own variables win.
        spec.env = running.handle.env.iter().cloned().chain(spec.env).collect();
        // Opened in a task of its own: once the agent may have started the command, its audit
        // entry is written even if the caller goes away meanwhile (a dropped stream then
        // reaches the command as any disconnect does).
        let (this, p) = (self.clone(), p.clone());
        detached(async move {
            let stream = this
                .open_command(running, CommandOpen::Exec(spec), timeout_ms)
                .await?;
            this.metrics.command_started();
            this.audit(Some(&p), "exec", Some(&rec.id), Some(req.command));
            Ok(stream)
        })
        .await
    }

    /// Attaches to a command the sandbox holds, replaying its output from the given offsets.
    /// An unknown id shows as the stream's first event ([`crate::ExecFailure::CommandNotFound`]).
    pub async fn attach(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        command_id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<CommandStream, ControlError> {
        let running = self.running_for(p, sandbox_id).await?;
        self.open_command(
            running,
            attach(command_id, stdout_offset, stderr_offset),
            None,
        )
        .await
    }

    /// Parks a stream whose client must acknowledge before more is read (SSE `ack_required`).
    pub fn park(&self, stream: CommandStream, stdout_offset: u64, stderr_offset: u64) {
        self.parked.park(stream, [stdout_offset, stderr_offset]);
    }

    /// Resumes a command for an SSE client: the stream parked at exactly these offsets if there
    /// is one (a resume [`Control::park`] asked for), else a new attachment.
    pub async fn resume(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        command_id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<CommandStream, ControlError> {
        // The caller must still be allowed to use the sandbox before a parked stream is handed
        // back; this also wakes nothing, since a parked stream's sandbox runs.
        let running = self.running_for(p, sandbox_id).await?;
        if let Some(stream) = self.parked.take(
            &running.record.id,
            command_id,
            [stdout_offset, stderr_offset],
        ) {
            return Ok(stream);
        }
        self.open_command(
            running,
            attach(command_id, stdout_offset, stderr_offset),
            None,
        )
        .await
    }

    /// The commands a sandbox holds.
    pub async fn list_commands(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
    ) -> Result<Vec<CommandSummary>, ControlError> {
        let running = self.running_for(p, sandbox_id).await?;
        match self.driver.list_commands(&running.handle).await {
            Ok(list) => Ok(list),
            Err(e) => Err(self.agent_failed(&running, e).await),
        }
    }

    async fn open_command(
        self: &Arc<Self>,
        running: Running,
        open: CommandOpen,
        timeout_ms: Option<u64>,
    ) -> Result<CommandStream, ControlError> {
        let channel = match self.driver.command(&running.handle, open).await {
            Ok(c) => c,
            Err(e) => return Err(self.agent_failed(&running, e).await),
        };
        let ctx = StreamContext {
            driver: self.driver.clone(),
            metrics: self.metrics.clone(),
            runtime_id: running.record.runtime_id.clone(),
            sandbox_id: running.record.id.clone(),
        };
        Ok(CommandStream::new(channel, ctx, timeout_ms, running.guard))
    }
}

fn attach(command_id: &str, stdout_offset: u64, stderr_offset: u64) -> CommandOpen {
    CommandOpen::Attach {
        command_id: command_id.to_owned(),
        stdout_offset,
        stderr_offset,
    }
}
