//! `rkt api-service`: rkt's read-only gRPC API, queried with a client generated from rkt's own
//! `api.proto`, about pods of every kind (exited with a status, prepared, running) and the
//! store's images, while the service runs as a member of the `rkt` group, in the test's "host"
//! network namespace on its loopback.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api_service::v1alpha::public_api_client::PublicApiClient;
use api_service::v1alpha::{
    self, AppState, EventType, ImageFilter, KeyValue, ListImagesRequest, ListPodsRequest,
    PodFilter, PodState,
};
use rkt_tests::{stderr, stdout, uuid_of, E2e};

/// The `rkt` group's ID from `/etc/group` (rkt creates the group with its data directory).
fn rkt_gid() -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"rkt")).then(|| f.get(2)?.parse().ok())?
        })
}

/// `cmd` (a `rkt` of [`E2e::rkt`]) run as `nobody` with the `rkt` group, in the test's
/// namespace.
fn as_member(e: &E2e, cmd: &Command, gid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534".to_string(),
        "--regid=65534".to_string(),
        format!("--groups={gid}"),
        "--".into(),
    ])
    .arg(cmd.get_program())
    .args(cmd.get_args());
    if let Some(ns) = &e.host_ns {
        ns.enter(&mut c);
    }
    c
}

/// Starts `cmd` (an API service) and waits for its `listening on ADDR` line; returns the
/// process and ADDR.
fn start_service(mut cmd: Command) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let t0 = Instant::now();
    let addr = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the service never listened"
        );
        let Some(Ok(l)) = lines.next() else {
            let _ = child.kill();
            panic!("the API service ended: {:?}", child.wait());
        };
        eprintln!("api-service: {l}");
        if let Some(a) = l.strip_prefix("rkt: API service listening on ") {
            break a.to_string();
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(|l| eprintln!("api-service: {l:?}")));
    (child, addr)
}

/// SIGTERM to the service; its exit code (a service still there after 20 s is killed: no
/// code).
fn stop_service(child: Child) -> Option<i32> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    rkt_tests::wait_output(child, Duration::from_secs(20))
        .status
        .code()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

/// What the test asks the service, in the namespace, with a current-thread runtime.
fn query<T: Send + 'static>(
    e: &E2e,
    addr: &str,
    f: impl FnOnce(
            PublicApiClient<tonic::transport::Channel>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send
        + 'static,
) -> T {
    let url = format!("http://{addr}");
    let run = move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let c = PublicApiClient::connect(url).await.unwrap();
            f(c).await
        })
    };
    match &e.host_ns {
        Some(ns) => ns.thread(run).join().unwrap(),
        None => run(),
    }
}

#[test]
fn ns_api_service_reports_pods_and_images() {
    let name = "ns_api_service_reports_pods_and_images";
    let Some(e) = E2e::require(name) else {
        return;
    };
    // The data directory's parents must let the group member through.
    std::fs::set_permissions(e.tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    // A pod that exited with 3, a prepared pod, a running pod.
    let exits = e.pod_check_image("api-exits.aci", |s| s);
    let saved = e.path("exited-uuid");
    let o = e.run(&[
        "run".to_string(),
        e.stage1_flag(),
        format!("--uuid-file-save={}", saved.display()),
        exits.display().to_string(),
        "--".into(),
        "--no-check".into(),
        "--exit=3".into(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let exited = uuid_of(&saved);
    let hello = e.hello_image();
    let o = e.run(&[
        "prepare".to_string(),
        "--quiet".into(),
        e.stage1_flag(),
        hello.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let prepared = stdout(&o).trim().to_string();
    let (mut sleeper, running) = e.start_sleeper("api-sleeper.aci", &[]);

    let Some(gid) = rkt_gid() else {
        rkt_tests::skip(name, "no rkt group");
        return;
    };
    // The apps' statuses lie in the pod's root-only stage1 root; a member reads the copy stage1
    // leaves in the pod directory.
    let o = as_member(&e, &e.rkt(&["status", &exited]), gid)
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("app-api-exits=3"),
        "rkt status as a rkt group member: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let index = e.dir().join("cas/db/index.sqlite");
    let index_before = std::fs::read(&index).unwrap();
    let cmd = e.rkt(&["api-service", "--listen=127.0.0.1:0"]);
    let (service, addr) = start_service(as_member(&e, &cmd, gid));

    let (ex, pr, ru) = (exited.clone(), prepared.clone(), running.clone());
    let (info, all, detailed, some, by_cgroup) = query(&e, &addr, move |mut c| {
        Box::pin(async move {
            let info = c
                .get_info(v1alpha::GetInfoRequest {})
                .await
                .unwrap()
                .into_inner();
            let all = c
                .list_pods(ListPodsRequest::default())
                .await
                .unwrap()
                .into_inner();
            let detailed = c
                .list_pods(ListPodsRequest {
                    detail: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            // OR of two filters: the exited pod by ID, and whatever runs.
            let some = c
                .list_pods(ListPodsRequest {
                    filters: vec![
                        PodFilter {
                            ids: vec![ex],
                            ..Default::default()
                        },
                        PodFilter {
                            states: vec![PodState::Running as i32],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let running_pod = all.pods.iter().find(|p| p.id == ru).cloned();
            let by_cgroup = match running_pod {
                Some(p) if !p.cgroup.is_empty() => Some(
                    c.list_pods(ListPodsRequest {
                        filters: vec![PodFilter {
                            pod_sub_cgroups: vec![format!("{}/some-app", p.cgroup)],
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner(),
                ),
                _ => None,
            };
            let _ = pr;
            (info, all, detailed, some, by_cgroup)
        })
    });
    let info = info.info.unwrap();
    assert_eq!(info.api_version, "1.0.0-alpha");
    assert_eq!(info.rkt_version, "1.30.0");
    assert_eq!(info.appc_version, "0.8.11");
    let flags = info.global_flags.unwrap();
    assert_eq!(
        std::path::Path::new(&flags.dir),
        std::fs::canonicalize(e.dir()).unwrap()
    );
    assert_eq!(flags.insecure_flags, "image");

    let pod = |list: &v1alpha::ListPodsResponse, id: &str| {
        list.pods
            .iter()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("pod {id} not listed: {list:?}"))
            .clone()
    };
    assert_eq!(all.pods.len(), 3, "{all:?}");
    let x = pod(&all, &exited);
    assert_eq!(x.state, PodState::Exited as i32);
    assert_eq!(x.apps.len(), 1);
    assert_eq!(x.apps[0].name, "api-exits");
    assert_eq!(x.apps[0].state, AppState::Exited as i32);
    assert_eq!(x.apps[0].exit_code, 3);
    let img = x.apps[0].image.clone().unwrap();
    assert_eq!(img.name, "example.com/api-exits");
    assert_eq!(img.version, "0.0.1");
    assert!(img.id.starts_with("sha512-"), "{img:?}");
    assert!(x.created_at > 0 && x.started_at >= x.created_at, "{x:?}");
    assert!(x.manifest.is_empty(), "no manifest without detail");
    let p = pod(&all, &prepared);
    assert_eq!(p.state, PodState::Prepared as i32);
    assert_eq!(p.apps[0].state, AppState::Undefined as i32);
    assert_eq!(p.apps[0].exit_code, -1);
    assert_eq!(p.pid, -1);
    assert_eq!(p.started_at, 0);
    let r = pod(&all, &running);
    assert_eq!(r.state, PodState::Running as i32);
    assert_eq!(r.apps[0].state, AppState::Running as i32);
    assert!(r.pid > 0, "{r:?}");
    assert!(
        r.cgroup.ends_with(&format!("/rkt-{running}")),
        "the running pod's cgroup: {r:?}"
    );
    let by_cgroup = by_cgroup.expect("the running pod has a cgroup");
    assert_eq!(
        by_cgroup
            .pods
            .iter()
            .map(|p| p.id.clone())
            .collect::<Vec<_>>(),
        vec![running.clone()]
    );
    let mut ids: Vec<String> = some.pods.iter().map(|p| p.id.clone()).collect();
    ids.sort();
    let mut want = vec![exited.clone(), running.clone()];
    want.sort();
    assert_eq!(ids, want, "filters are ORed");
    let d = pod(&detailed, &exited);
    let on_disk = std::fs::read(e.pod_dir(&exited).join("pod")).unwrap();
    assert_eq!(
        d.manifest, on_disk,
        "detail gives the pod manifest as written"
    );

    // Images: filters, detail, and one image's manifest as `rkt image cat-manifest` prints it.
    let hello_id = {
        let o = e.run(&["image", "list", "--no-legend", "--full", "--fields=id,name"]);
        stdout(&o)
            .lines()
            .find(|l| l.contains("example.com/hello"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    let cat = e.run(&["image", "cat-manifest", &hello_id]);
    let cat: serde_json::Value = serde_json::from_slice(&cat.stdout).unwrap();
    let (ex, hid) = (exited.clone(), hello_id.clone());
    let (images, ours, inspected, missing_image, missing_pod, bad_pod, inspected_pod, logs) =
        query(&e, &addr, move |mut c| {
            Box::pin(async move {
                let images = c
                    .list_images(ListImagesRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                let ours = c
                    .list_images(ListImagesRequest {
                        filters: vec![ImageFilter {
                            prefixes: vec!["example.com/".into()],
                            labels: vec![kv("version", "0.0.1")],
                            ..Default::default()
                        }],
                        detail: true,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let inspected = c
                    .inspect_image(v1alpha::InspectImageRequest { id: hid })
                    .await
                    .unwrap()
                    .into_inner();
                let missing_image = c
                    .inspect_image(v1alpha::InspectImageRequest {
                        id: format!("sha512-{}", "0".repeat(128)),
                    })
                    .await
                    .unwrap_err()
                    .code();
                let missing_pod = c
                    .inspect_pod(v1alpha::InspectPodRequest {
                        id: "00000000-0000-4000-8000-000000000000".into(),
                    })
                    .await
                    .unwrap_err()
                    .code();
                let bad_pod = c
                    .inspect_pod(v1alpha::InspectPodRequest {
                        id: "../../../etc".into(),
                    })
                    .await
                    .unwrap_err()
                    .code();
                // A prefix resolves, as in rkt.
                let inspected_pod = c
                    .inspect_pod(v1alpha::InspectPodRequest {
                        id: ex[..8].to_string(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let logs = c
                    .get_logs(v1alpha::GetLogsRequest::default())
                    .await
                    .err()
                    .map(|s| s.code());
                (
                    images,
                    ours,
                    inspected,
                    missing_image,
                    missing_pod,
                    bad_pod,
                    inspected_pod,
                    logs,
                )
            })
        });
    assert!(images.images.len() >= 4, "{images:?}");
    assert!(images.images.iter().all(|i| i.manifest.is_empty()));
    let mut names: Vec<&str> = ours.images.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "example.com/api-exits",
            "example.com/api-sleeper",
            "example.com/hello"
        ]
    );
    assert!(ours.images.iter().all(|i| !i.manifest.is_empty()));
    let hi = inspected.image.unwrap();
    assert_eq!(hi.id, hello_id);
    assert_eq!(hi.name, "example.com/hello");
    assert!(hi.size > 0 && hi.import_timestamp > 1_700_000_000, "{hi:?}");
    assert!(hi.labels.contains(&kv("arch", "amd64")));
    let served: serde_json::Value = serde_json::from_slice(&hi.manifest).unwrap();
    assert_eq!(served, cat);
    assert_eq!(missing_image, tonic::Code::NotFound);
    assert_eq!(missing_pod, tonic::Code::NotFound);
    assert_eq!(bad_pod, tonic::Code::InvalidArgument);
    let ip = inspected_pod.pod.unwrap();
    assert_eq!(ip.apps[0].exit_code, 3);
    assert_eq!(ip.manifest, on_disk);
    assert_eq!(logs, Some(tonic::Code::Unimplemented));

    // A second service cannot take the same address; the first stops cleanly on SIGTERM and
    // changed nothing.
    let taken = as_member(
        &e,
        &e.rkt(&["api-service", &format!("--listen={addr}")]),
        gid,
    )
    .output()
    .unwrap();
    assert_ne!(taken.status.code(), Some(0));
    assert!(
        stderr(&taken).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&taken)
    );
    assert_eq!(
        std::fs::read(&index).unwrap(),
        index_before,
        "the API service changed the store's index"
    );

    // Events: a listener sees an image imported, a pod prepared, started, its app exit with 4,
    // the pod exit and its collection, and the image removed.
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let a = addr.clone();
    let listener = {
        let url = format!("http://{a}");
        let run = move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut c = PublicApiClient::connect(url).await.unwrap();
                let mut stream = c
                    .listen_events(v1alpha::ListenEventsRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                opened_tx.send(()).unwrap();
                let mut seen: Vec<v1alpha::Event> = Vec::new();
                let done = |seen: &[v1alpha::Event]| {
                    seen.iter()
                        .any(|e| e.r#type == EventType::ImageRemoved as i32)
                };
                while !done(&seen) {
                    match tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
                        Ok(Ok(Some(batch))) => seen.extend(batch.events),
                        other => panic!("the event stream ended early: {other:?} after {seen:?}"),
                    }
                }
                seen
            })
        };
        match &e.host_ns {
            Some(ns) => ns.thread(run),
            None => std::thread::spawn(run),
        }
    };
    opened.recv_timeout(Duration::from_secs(30)).unwrap();
    let ev_img = e.pod_check_image("api-events.aci", |s| s);
    let o = e.run(&["fetch", ev_img.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev_saved = e.path("events-uuid");
    let o = e.run(&[
        "run".to_string(),
        e.stage1_flag(),
        format!("--uuid-file-save={}", ev_saved.display()),
        "example.com/api-events".into(),
        "--".into(),
        "--no-check".into(),
        "--exit=4".into(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let ev_pod = uuid_of(&ev_saved);
    // Each step in a reading of its own (the poller reads every 0.5 s).
    std::thread::sleep(Duration::from_millis(1200));
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(1200));
    let o = e.run(&["image", "rm", "example.com/api-events"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let seen = listener.join().unwrap();
    let of_pod: Vec<(EventType, String)> = seen
        .iter()
        .filter(|e| e.id == ev_pod)
        .map(|e| (EventType::try_from(e.r#type).unwrap(), e.from.clone()))
        .collect();
    assert_eq!(
        of_pod,
        vec![
            (EventType::PodPrepared, ev_pod.clone()),
            (EventType::PodStarted, ev_pod.clone()),
            (EventType::AppStarted, "api-events".into()),
            (EventType::AppExited, "api-events".into()),
            (EventType::PodExited, ev_pod.clone()),
            (EventType::PodGarbageCollected, ev_pod.clone()),
        ],
        "{seen:?}"
    );
    let exit = seen
        .iter()
        .find(|e| e.id == ev_pod && e.r#type == EventType::AppExited as i32)
        .unwrap();
    assert_eq!(exit.data, vec![kv("exit_code", "4")]);
    let images: Vec<(i32, &str)> = seen
        .iter()
        .filter(|e| e.from == "example.com/api-events")
        .map(|e| (e.r#type, e.from.as_str()))
        .collect();
    assert_eq!(
        images,
        vec![
            (EventType::ImageImported as i32, "example.com/api-events"),
            (EventType::ImageRemoved as i32, "example.com/api-events"),
        ]
    );
    // The earlier exited pod went with the same gc.
    assert!(seen
        .iter()
        .any(|e| e.id == exited && e.r#type == EventType::PodGarbageCollected as i32));

    assert_eq!(stop_service(service), Some(0));
    let o = e.run(&["stop", &running]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = sleeper.wait();
}

/// Started by systemd's socket activation (`systemd-socket-activate`, as rkt's
/// `rkt-api-tcp.socket`): the service serves on the socket it is given, and refuses `--listen`
/// beside it.
#[test]
fn ns_api_service_takes_systemds_socket() {
    let name = "ns_api_service_takes_systemds_socket";
    let Some(e) = E2e::require(name) else {
        return;
    };
    if !std::path::Path::new("/usr/bin/systemd-socket-activate").exists() {
        rkt_tests::skip(name, "no systemd-socket-activate (package systemd)");
        return;
    }
    // A free port in the test's own namespace (nothing else binds there).
    let port = {
        let get = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        match &e.host_ns {
            Some(ns) => ns.thread(get).join().unwrap(),
            None => get(),
        }
    };
    let addr = format!("127.0.0.1:{port}");
    let activate = |extra: &[&str]| {
        let mut rkt = e.rkt(&["api-service"]);
        rkt.args(extra);
        let mut c = Command::new("systemd-socket-activate");
        c.args(["-l", &addr, "--"])
            .arg(rkt.get_program())
            .args(rkt.get_args());
        if let Some(ns) = &e.host_ns {
            ns.enter(&mut c);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // systemd-socket-activate listens, then execs the service at the first connection.
    let mut svc = activate(&[]);
    let (_, rest) = wait_for_line(&mut svc, "Listening on");
    let a = addr.clone();
    let info = query(&e, &a, |mut c| {
        Box::pin(async move { c.get_info(v1alpha::GetInfoRequest {}).await })
    });
    let _ = svc.kill();
    let _ = svc.wait();
    let _ = rest.join();
    assert_eq!(
        info.unwrap().into_inner().info.unwrap().api_version,
        "1.0.0-alpha"
    );

    let mut refused = activate(&["--listen=127.0.0.1:1"]);
    let (_, rest) = wait_for_line(&mut refused, "Listening on");
    // The connection starts it; it refuses and exits.
    let get = {
        let addr = addr.clone();
        move || std::net::TcpStream::connect(addr).map(drop)
    };
    let _ = match &e.host_ns {
        Some(ns) => ns.thread(get).join().unwrap(),
        None => get(),
    };
    let status = rkt_tests::wait_output(refused, Duration::from_secs(30)).status;
    let err = rest.join().unwrap();
    assert_ne!(status.code(), Some(0));
    assert!(
        err.contains("started under systemd.socket(5)") && err.contains("--listen was given"),
        "{err}"
    );
}

/// Reads `child`'s stderr until a line containing `want`; returns that line and a thread that
/// collects the rest.
fn wait_for_line(child: &mut Child, want: &str) -> (String, std::thread::JoinHandle<String>) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(want) => break l,
            Some(Ok(l)) => eprintln!("{l}"),
            _ => panic!("stderr ended before {want:?}"),
        }
    };
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        for l in lines.map_while(Result::ok) {
            eprintln!("{l}");
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    (line, rest)
}

/// `--listen=unix:PATH`: a socket of mode 0660 in the `rkt` group, so that the API, which
/// shows what only root and the group may read in the data directory, is not open to every
/// local user as a loopback port is. The attack: a local user outside the group connects.
#[test]
fn ns_api_service_on_a_unix_socket_only_for_the_rkt_group() {
    use std::os::unix::fs::MetadataExt;
    let name = "ns_api_service_on_a_unix_socket_only_for_the_rkt_group";
    let Some(e) = E2e::require(name) else {
        return;
    };
    let o = e.run(&["fetch", e.hello_image().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let Some(gid) = rkt_gid() else {
        rkt_tests::skip(name, "no rkt group");
        return;
    };
    std::fs::set_permissions(e.tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    // The group may make the socket here; anyone may pass through (the socket's own mode is
    // what keeps others out).
    let dir = e.path("run");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, None, Some(gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o771)).unwrap();
    let sock = dir.join("api.sock");
    let cmd = e.rkt(&[
        "api-service".to_string(),
        format!("--listen=unix:{}", sock.display()),
    ]);
    let (service, addr) = start_service(as_member(&e, &cmd, gid));
    assert_eq!(addr, format!("unix:{}", sock.display()));
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o660);
    assert_eq!(m.gid(), gid);

    let path = sock.clone();
    let info = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .unwrap();
            PublicApiClient::new(channel)
                .get_info(v1alpha::GetInfoRequest {})
                .await
                .unwrap()
                .into_inner()
        })
    })
    .join()
    .unwrap();
    assert_eq!(info.info.unwrap().api_version, "1.0.0-alpha");

    // Connect as another user than the service's (which owns the socket), without and with
    // the group.
    let connect = |groups: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65533",
                "--regid=65533",
                groups,
                "--",
                "/usr/bin/python3",
                "-c",
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1])\nexcept PermissionError:\n sys.exit(13)",
            ])
            .arg(&sock)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(
        connect("--clear-groups"),
        Some(13),
        "a user outside the group connected"
    );
    assert_eq!(connect(&format!("--groups={gid}")), Some(0));

    assert_eq!(stop_service(service), Some(0));
    assert!(!sock.exists(), "the service left its socket behind");
}
