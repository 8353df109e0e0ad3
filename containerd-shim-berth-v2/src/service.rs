//! containerd's Task service (shim v2) over ttrpc: requests in, berth's
//! task operations called, responses out. containerd 1.6 calls it
//! `containerd.task.v2.Task`, 2.x `containerd.task.v3.Task` (same
//! messages); both names are served.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_shim_protos::api::{self, Empty, Status};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::ttrpc::{self, MethodHandler, TtrpcContext};
use containerd_shim_protos::Task;

use crate::error::Error;
use crate::publish::to_timestamp;
use crate::shim::{Phase, Shim};
use crate::stdio::Paths;
use crate::task::CreateParams;

type TResult<T> = ttrpc::Result<T>;

pub struct Service {
    pub shim: Arc<Shim>,
}

/// The method table for the ttrpc server, under both service names.
pub fn methods(shim: Arc<Shim>) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let mut all = HashMap::new();
    let v3 = containerd_shim_protos::create_task(Arc::new(Service { shim: shim.clone() }));
    let v2 = containerd_shim_protos::create_task(Arc::new(Service { shim }));
    for (path, h) in v2 {
        all.insert(
            path.replace("/containerd.task.v3.Task/", "/containerd.task.v2.Task/"),
            h,
        );
    }
    all.extend(v3);
    all
}

/// Type names of the messages we wrap in an Any (constants, not
/// reflection: see `publish::Event`; a test checks them).
const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";
const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";

fn any_of<M: Message>(type_url: &str, m: &M) -> TResult<Any> {
    let value = m
        .write_to_bytes()
        .map_err(|e| ttrpc::Error::Others(format!("encode: {e}")))?;
    Ok(Any {
        type_url: type_url.to_string(),
        value,
        ..Default::default()
    })
}

fn status_of(phase: Phase) -> Status {
    match phase {
        Phase::Created => Status::CREATED,
        Phase::Running => Status::RUNNING,
        Phase::Paused => Status::PAUSED,
        Phase::Stopped => Status::STOPPED,
    }
}

impl Task for Service {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TResult<api::StateResponse> {
        let s = self.shim.state(&req.id, &req.exec_id)?;
        let mut r = api::StateResponse::new();
        r.id = if req.exec_id.is_empty() {
            req.id
        } else {
            req.exec_id.clone()
        };
        r.bundle = self.shim.bundle.dir.to_string_lossy().into_owned();
        r.pid = s.pid;
        r.status = status_of(s.phase).into();
        r.stdin = s.paths.stdin;
        r.stdout = s.paths.stdout;
        r.stderr = s.paths.stderr;
        r.terminal = s.paths.terminal;
        if let Some(e) = s.exit {
            r.exit_status = e.status;
            r.exited_at = Some(to_timestamp(e.at)).into();
        }
        r.exec_id = req.exec_id;
        Ok(r)
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TResult<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "restoring from a checkpoint is not supported".into(),
            )
            .into());
        }
        let pid = self.shim.create(CreateParams {
            id: req.id,
            bundle: req.bundle,
            rootfs: req.rootfs,
            paths: Paths {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            },
        })?;
        let mut r = api::CreateTaskResponse::new();
        r.pid = pid;
        Ok(r)
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TResult<api::StartResponse> {
        let pid = self.shim.start(&req.id, &req.exec_id)?;
        let mut r = api::StartResponse::new();
        r.pid = pid;
        Ok(r)
    }

    fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> TResult<api::DeleteResponse> {
        let (pid, exit) = self.shim.delete(&req.id, &req.exec_id)?;
        let mut r = api::DeleteResponse::new();
        r.pid = pid;
        r.exit_status = exit.status;
        r.exited_at = Some(to_timestamp(exit.at)).into();
        Ok(r)
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TResult<api::PidsResponse> {
        let mut r = api::PidsResponse::new();
        for (pid, exec) in self.shim.pids(&req.id)? {
            let mut info = api::ProcessInfo::new();
            info.pid = pid;
            if let Some(exec_id) = exec {
                let mut d = ProcessDetails::new();
                d.exec_id = exec_id;
                info.info = Some(any_of(PROCESS_DETAILS, &d)?).into();
            }
            r.processes.push(info);
        }
        Ok(r)
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TResult<Empty> {
        self.shim.pause(&req.id, true)?;
        Ok(Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TResult<Empty> {
        self.shim.pause(&req.id, false)?;
        Ok(Empty::new())
    }

    fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> TResult<Empty> {
        Err(Error::Unimplemented("checkpoint is not supported by the berth shim".into()).into())
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TResult<Empty> {
        self.shim.kill(&req.id, &req.exec_id, req.signal, req.all)?;
        Ok(Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TResult<Empty> {
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        if spec.is_empty() {
            return Err(Error::InvalidArgument("exec without a process spec".into()).into());
        }
        let paths = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        self.shim.exec(&req.id, &req.exec_id, paths, spec)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TResult<Empty> {
        self.shim
            .resize(&req.id, &req.exec_id, req.width, req.height)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TResult<Empty> {
        self.shim.close_io(&req.id, &req.exec_id, req.stdin)?;
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TResult<Empty> {
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        self.shim.update(&req.id, resources)?;
        Ok(Empty::new())
    }

    /// The serving loop parks Waits itself (`server`) and never calls
    /// this; answered here only for a process that has already exited.
    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TResult<api::WaitResponse> {
        let exit = self.shim.try_wait(&req.id, &req.exec_id)?.ok_or_else(|| {
            Error::FailedPrecondition(format!("process {:?} is still running", req.exec_id))
        })?;
        let mut r = api::WaitResponse::new();
        r.exit_status = exit.status;
        r.exited_at = Some(to_timestamp(exit.at)).into();
        Ok(r)
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> TResult<api::StatsResponse> {
        let raw = self.shim.stats(&req.id)?;
        let mut r = api::StatsResponse::new();
        r.stats = Some(any_of(CGROUPS_V1_METRICS, &crate::stats::to_metrics(&raw))?).into();
        Ok(r)
    }

    fn connect(&self, _: &TtrpcContext, _: api::ConnectRequest) -> TResult<api::ConnectResponse> {
        let mut r = api::ConnectResponse::new();
        r.shim_pid = std::process::id();
        r.task_pid = self.shim.init_pid();
        r.version = env!("CARGO_PKG_VERSION").to_string();
        Ok(r)
    }

    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TResult<Empty> {
        self.shim.shutdown(req.now);
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::cgroups::metrics::Metrics;
    use containerd_shim_protos::protobuf::MessageFull;

    #[test]
    fn any_type_names_match_the_protos() {
        assert_eq!(PROCESS_DETAILS, ProcessDetails::descriptor().full_name());
        assert_eq!(CGROUPS_V1_METRICS, Metrics::descriptor().full_name());
    }
}
