//! containerd's CRI plugin running pods on the berth runtime handler, as
//! the kubelet would: a small CRI client (k8s-cri's generated gRPC code)
//! on the private containerd's socket, the runtime handler configured as
//! README shows, the sandbox and container image imported with `ctr` from
//! a tar the test builds. Pods use the host's network (no CNI).

use std::path::Path;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use super::harness::{Ctrd, SANDBOX_IMAGE};
use crate::imgutil::{LayerBuilder, TestImage};

/// A gRPC channel to containerd's Unix socket.
async fn channel(sock: &Path) -> Channel {
    let sock = sock.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await
        .expect("connect to containerd's CRI socket")
}

/// The busybox image, as `SANDBOX_IMAGE`, into containerd's `k8s.io`
/// namespace (where the CRI plugin looks).
fn import_image(c: &Ctrd) {
    let layer = LayerBuilder::new().busybox().build();
    let image = TestImage::new(
        vec![layer],
        serde_json::json!({"Cmd": ["/bin/sleep", "1000000"]}),
    );
    let tar = c.dir.path().join("image.tar");
    image.write_docker_save(&tar, SANDBOX_IMAGE, None);
    let tar = tar.to_string_lossy().into_owned();
    c.ok(&["-n", "k8s.io", "image", "import", &tar]);
}

/// containerd's log and the runc logs of every k8s.io bundle, for failures.
fn diag(c: &Ctrd) -> String {
    let mut out = c.log();
    let bundles = c.bundles().with_file_name("k8s.io");
    for b in std::fs::read_dir(bundles).into_iter().flatten().flatten() {
        let log = std::fs::read_to_string(b.path().join("runc.log")).unwrap_or_default();
        out.push_str(&format!("\nrunc.log of {}:\n{log}", b.path().display()));
    }
    out
}

/// The PID of a task in containerd's `k8s.io` namespace.
fn k8s_task_pid(c: &Ctrd, id: &str) -> Option<u32> {
    c.ok(&["-n", "k8s.io", "task", "ls"])
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(1)?.parse().ok())?
        })
}

/// The memory limit of a process's memory cgroup (v1 or v2).
fn memory_limit(pid: u32) -> String {
    let cg = runtime_core::cgroup::of_pid(pid as i32).expect("cgroup of the container");
    let file = match &cg {
        runtime_core::cgroup::Cgroup::V2(d) => d.join("memory.max"),
        runtime_core::cgroup::Cgroup::V1(_) => cg
            .v1_dir(pid as i32, "memory")
            .expect("memory cgroup")
            .join("memory.limit_in_bytes"),
    };
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .trim()
        .to_string()
}

#[test]
fn ctrd_cri_runs_a_pod_on_the_berth_runtime_handler() {
    let Some(c) = Ctrd::with_cri() else { return };
    import_image(&c);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ch = rt.block_on(channel(&c.address()));
    let mut images = ImageServiceClient::new(ch.clone());
    let mut rs = RuntimeServiceClient::new(ch);

    // The CRI plugin sees the imported image.
    let status = rt
        .block_on(images.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: SANDBOX_IMAGE.into(),
                ..Default::default()
            }),
            verbose: false,
        }))
        .unwrap_or_else(|e| panic!("ImageStatus: {e}\n{}", diag(&c)))
        .into_inner();
    assert!(
        status.image.is_some(),
        "the CRI plugin sees {SANDBOX_IMAGE}"
    );

    let logs = c.dir.path().join("pod-logs");
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "p1".into(),
            uid: "uid-p1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .block_on(rs.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: "berth".into(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", diag(&c)))
        .into_inner()
        .pod_sandbox_id;
    // The sandbox runs under a berth shim.
    assert!(
        c.bundles()
            .with_file_name("k8s.io")
            .join(&pod)
            .join("shim.pid")
            .exists(),
        "the sandbox's bundle has a berth shim"
    );

    let created = rt
        .block_on(rs.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "c1".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: SANDBOX_IMAGE.into(),
                    ..Default::default()
                }),
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo hello from cri; exec sleep 1000".into(),
                ],
                log_path: "c1.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        }))
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", diag(&c)));
    let ctr_id = created.into_inner().container_id;
    rt.block_on(rs.start_container(cri::StartContainerRequest {
        container_id: ctr_id.clone(),
    }))
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", diag(&c)));

    let container_status = |rs: &mut RuntimeServiceClient<Channel>| {
        rt.block_on(rs.container_status(cri::ContainerStatusRequest {
            container_id: ctr_id.clone(),
            verbose: false,
        }))
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("a status")
    };
    assert_eq!(
        container_status(&mut rs).state,
        cri::ContainerState::ContainerRunning as i32
    );
    // The container's output reaches the CRI log through the shim's fifo.
    let log = logs.join("c1.log");
    c.wait_until(10, "the container's line in its CRI log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" stdout F hello from cri"))
    });

    // UpdateContainerResources is the task's Update: the cgroup changes.
    let pid = k8s_task_pid(&c, &ctr_id).expect("the container's task");
    let limit: i64 = 48 * 1024 * 1024;
    assert_ne!(memory_limit(pid), limit.to_string());
    rt.block_on(
        rs.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: ctr_id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: limit,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", diag(&c)));
    assert_eq!(memory_limit(pid), limit.to_string());

    // ExecSync: Exec, Start, CloseIO and Wait on the shim.
    let exec = rt
        .block_on(rs.exec_sync(cri::ExecSyncRequest {
            container_id: ctr_id.clone(),
            cmd: vec!["/bin/sh".into(), "-c".into(), "echo in exec; exit 3".into()],
            timeout: 20,
        }))
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", diag(&c)))
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "in exec\n");
    assert_eq!(exec.exit_code, 3);

    rt.block_on(rs.stop_container(cri::StopContainerRequest {
        container_id: ctr_id.clone(),
        timeout: 1,
    }))
    .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", diag(&c)));
    let stopped = container_status(&mut rs);
    assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
    // sleep ignores nothing: SIGTERM ends it (128+15).
    assert_eq!(stopped.exit_code, 143, "{stopped:?}");
    rt.block_on(rs.remove_container(cri::RemoveContainerRequest {
        container_id: ctr_id.clone(),
    }))
    .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", diag(&c)));
    rt.block_on(rs.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", diag(&c)));
    rt.block_on(rs.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", diag(&c)));
    c.wait_until(15, "every berth shim of the pod to exit", || {
        c.shims().is_empty()
    });
}
