//! Mutable pods (`rkt app sandbox`): the exec channel to guest-init and the app entrypoints.
//!
//! `run` binds a Unix stream socket at the pod directory's `exec.sock`
//! (`pod_abi::paths::EXEC_SOCKET`, mode 0600) before it forks guest-init, which inherits the
//! listening socket (`--exec-fd`) and serves it with its exec service, as the kvm flavor serves
//! vsock. The pod directory is outside the pod's mount namespace (the stage1 root is pivoted
//! into and the old root detached), so nothing in the pod can replace the socket; the host
//! side only connects to it, after checking that it is a socket (not a symlink).
//! `app_add`, `app_start`, `app_stop` and `app_rm` (cwd = the pod directory) send one
//! `pod_abi::exec` app request on it (`stage1_common::app`).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::Context;
use pod_abi::paths::EXEC_SOCKET;
use pod_abi::stage1::{AppArgs, Entrypoint};
use stage1_common::{PodContext, Stage1Error};

/// Binds the pod's exec socket in `pod_dir` (close-on-exec; `run` passes it to guest-init).
pub fn listen(pod_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = pod_dir.join(EXEC_SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => {}
    }
    // Bound relative to the cwd (the pod directory): no limit on the directory's path length.
    let l = UnixListener::bind(EXEC_SOCKET).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}

/// Connects to the exec socket of the pod in the cwd; refuses anything but a socket.
fn connect(pod_dir: &Path) -> Result<UnixStream, Stage1Error> {
    let path = pod_dir.join(EXEC_SOCKET);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => {
            return Err(Stage1Error::Refused(format!(
                "{} is not the pod's exec socket",
                path.display()
            )))
        }
        Err(_) => {
            return Err(Stage1Error::Refused(
                "the pod has no exec channel (not started with rkt app sandbox, or exited)".into(),
            ))
        }
    }
    UnixStream::connect(EXEC_SOCKET).map_err(|e| {
        Stage1Error::Refused(format!(
            "cannot reach guest-init's exec service at {}: {e}",
            path.display()
        ))
    })
}

/// `app_add`, `app_start`, `app_stop`, `app_rm`. `app_add`'s volumes are attached first, in
/// guest-init's mount namespace (the pod's, whose root is the stage1 root), at the app's root
/// there; guest-init then finds them in place as it sets the app up.
pub fn request(pod: &PodContext, entry: Entrypoint, args: &AppArgs) -> Result<i32, Stage1Error> {
    let req = stage1_common::app::request_for(entry, args).ok_or_else(|| {
        Stage1Error::Refused(format!("{} is not an app entrypoint", entry.name()))
    })?;
    let stream = connect(pod.dir())?;
    if args.has_trees() {
        let pid = pod.read_pid().map_err(Stage1Error::failed)?;
        if let Some(why) = crate::stop::verify_guest_init(pid, &pod.uuid()) {
            return Err(Stage1Error::Refused(format!(
                "refusing to attach volumes: {why}"
            )));
        }
        let root = pod_abi::paths::guest_app_rootfs(&args.app);
        stage1_common::app::attach_mounts(pid, std::path::Path::new("/"), &root, args, 0)
            .map_err(Stage1Error::failed)?;
    }
    stage1_common::app::send_request(stream, &req).map_err(Stage1Error::failed)?;
    Ok(0)
}
