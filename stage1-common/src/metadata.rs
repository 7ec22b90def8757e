//! The metadata service as a stage1 sees it: the pod's `AC_METADATA_URL` when stage0 registered
//! it (`--mds-token`, `--mds-port`), and its unregistration when the pod ends.

use pod_abi::stage1::RunArgs;

/// Why a registered pod cannot be given its metadata URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--mds-register: {0}")]
pub struct MetadataUrlError(pub String);

/// The pod's `AC_METADATA_URL`, or `None` when it is not registered. `host` is the address at
/// which the pod's apps reach the host (its network's host-side IP; `127.0.0.1` with
/// `--net=host`); `None` when the pod has no network that reaches the host, which is an error
/// for a registered pod (rkt: the metadata service needs `--net=default`,
/// `default-restricted` or `host`).
pub fn url(args: &RunArgs, host: Option<&str>) -> Result<Option<String>, MetadataUrlError> {
    let Some(token) = &args.mds_token else {
        return Ok(None);
    };
    let Some(host) = host else {
        return Err(MetadataUrlError(format!(
            "the metadata service needs a pod network that reaches the host (--net=default, default-restricted or host); --net={} has none",
            args.net
        )));
    };
    let port = args.mds_port.unwrap_or(mds::DEFAULT_PORT);
    Ok(Some(mds::metadata_url(host, port, token)))
}

/// The address a pod with `--net=host` reaches the host's services at.
pub const HOST_NET_ADDRESS: &str = "127.0.0.1";

/// Unregisters the pod when it ends (best effort: `rkt gc` and `rkt rm` unregister too). For a
/// process that can still reach the registration socket (not a jailed, confined VMM).
pub fn unregister(uuid: &str) {
    let client = mds::client::Client::new(mds::socket_path());
    match client.unregister_pod(uuid) {
        Ok(_) => {}
        Err(e) => log::debug!("metadata service: cannot unregister pod {uuid}: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_needs_a_registration_and_a_host() {
        let mut a = RunArgs {
            net: "none".into(),
            ..Default::default()
        };
        assert_eq!(url(&a, None), Ok(None));
        a.mds_token = Some("ab".repeat(16));
        let e = url(&a, None).unwrap_err();
        assert!(e.to_string().contains("--net=none has none"), "{e}");
        assert_eq!(
            url(&a, Some("172.16.28.1")).unwrap().as_deref(),
            Some(format!("http://172.16.28.1:18112/{}", "ab".repeat(16)).as_str())
        );
        a.mds_port = Some(18200);
        assert!(url(&a, Some("127.0.0.1"))
            .unwrap()
            .unwrap()
            .starts_with("http://127.0.0.1:18200/"));
    }
}
