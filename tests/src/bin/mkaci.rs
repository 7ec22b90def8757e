//! mkaci: packs an ACI (gzip) for the build and the tests.
//!
//! ```text
//! mkaci --name NAME [--label k=v]... [--exec "CMD ARGS"] [--user U] [--group G]
//!       [--working-dir DIR] [--env K=V]... [--mount-point NAME:PATH[:ro]]...
//!       [--event-handler pre-start|post-stop=CMD ARGS]... [--isolator NAME=JSON]...
//!       [--annotation k=v]... [--file HOST:PATH[:MODE]]... [--dir PATH]...
//!       [--symlink PATH:TARGET]... [--manifest-json FILE] [--no-gzip] -o OUT.aci
//! ```
//! `--exec` is split on whitespace. `--file` adds a host file (or a directory, recursively);
//! parent directories are added as 0755. `--manifest-json` takes the manifest verbatim (the
//! other manifest flags are then ignored).

use std::collections::BTreeSet;
use std::error::Error;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use appc::aci::{AciBuilder, Compression};
use appc::schema::{Annotation, App, EnvVar, EventHandler, Label, MountPoint};
use appc::types::Isolator;
use appc::{AcIdentifier, AcName, ImageManifest};

type Res<T> = Result<T, Box<dyn Error>>;

#[derive(Default)]
struct Opts {
    name: Option<String>,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    exec: Option<Vec<String>>,
    user: String,
    group: String,
    working_dir: Option<String>,
    env: Vec<(String, String)>,
    mount_points: Vec<(String, String, bool)>,
    handlers: Vec<(String, Vec<String>)>,
    isolators: Vec<(String, serde_json::Value)>,
    files: Vec<(PathBuf, String, Option<u32>)>,
    dirs: Vec<String>,
    symlinks: Vec<(String, String)>,
    manifest_json: Option<PathBuf>,
    gzip: bool,
    out: Option<PathBuf>,
}

fn kv(flag: &str, s: &str) -> Res<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{flag} wants K=V, got {s:?}").into())
}

fn parse() -> Res<Opts> {
    let mut o = Opts {
        user: "0".into(),
        group: "0".into(),
        gzip: true,
        ..Default::default()
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = || -> Res<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value").into()),
            }
        };
        match flag.as_str() {
            "--name" => o.name = Some(val()?),
            "--label" => o.labels.push(kv("--label", &val()?)?),
            "--annotation" => o.annotations.push(kv("--annotation", &val()?)?),
            "--exec" => o.exec = Some(val()?.split_whitespace().map(String::from).collect()),
            "--user" => o.user = val()?,
            "--group" => o.group = val()?,
            "--working-dir" => o.working_dir = Some(val()?),
            "--env" => o.env.push(kv("--env", &val()?)?),
            "--mount-point" => {
                let v = val()?;
                let mut p = v.splitn(3, ':');
                let (n, path) = (
                    p.next().unwrap_or_default(),
                    p.next().ok_or("--mount-point NAME:PATH[:ro]")?,
                );
                o.mount_points
                    .push((n.to_string(), path.to_string(), p.next() == Some("ro")));
            }
            "--event-handler" => {
                let (n, cmd) = kv("--event-handler", &val()?)?;
                o.handlers
                    .push((n, cmd.split_whitespace().map(String::from).collect()));
            }
            "--isolator" => {
                let (n, j) = kv("--isolator", &val()?)?;
                o.isolators.push((n, serde_json::from_str(&j)?));
            }
            "--file" => {
                let v = val()?;
                let mut p = v.splitn(3, ':');
                let host = p.next().unwrap_or_default();
                let path = p.next().ok_or("--file HOST:PATH[:MODE]")?;
                let mode = match p.next() {
                    Some(m) => {
                        Some(u32::from_str_radix(m, 8).map_err(|_| format!("bad mode {m:?}"))?)
                    }
                    None => None,
                };
                o.files.push((PathBuf::from(host), path.to_string(), mode));
            }
            "--dir" => o.dirs.push(val()?),
            "--symlink" => {
                let v = val()?;
                let (p, t) = v.split_once(':').ok_or("--symlink PATH:TARGET")?;
                o.symlinks.push((p.to_string(), t.to_string()));
            }
            "--manifest-json" => o.manifest_json = Some(PathBuf::from(val()?)),
            "--no-gzip" => o.gzip = false,
            "-o" | "--output" => o.out = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("usage: mkaci --name NAME [options] -o OUT.aci (see the source header)");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}").into()),
        }
    }
    Ok(o)
}

fn manifest(o: &Opts) -> Res<ImageManifest> {
    let name = o.name.clone().ok_or("--name is required")?;
    let mut m = ImageManifest::new(AcIdentifier::new(name)?);
    for (k, v) in &o.labels {
        m.labels.push(Label {
            name: AcIdentifier::new(k.as_str())?,
            value: v.clone(),
        });
    }
    for (k, v) in &o.annotations {
        m.annotations.push(Annotation {
            name: AcIdentifier::new(k.as_str())?,
            value: v.clone(),
        });
    }
    if let Some(exec) = &o.exec {
        let mut app = App {
            exec: exec.clone(),
            user: o.user.clone(),
            group: o.group.clone(),
            ..Default::default()
        };
        app.working_directory = o.working_dir.clone();
        app.environment = o
            .env
            .iter()
            .map(|(k, v)| EnvVar {
                name: k.clone(),
                value: v.clone(),
            })
            .collect();
        for (n, p, ro) in &o.mount_points {
            app.mount_points.push(MountPoint {
                name: AcName::new(n.as_str())?,
                path: p.clone(),
                read_only: *ro,
            });
        }
        for (n, cmd) in &o.handlers {
            app.event_handlers.push(EventHandler {
                name: n.clone(),
                exec: cmd.clone(),
            });
        }
        for (n, v) in &o.isolators {
            app.isolators
                .push(Isolator::new(AcIdentifier::new(n.as_str())?, v.clone()));
        }
        m.app = Some(app);
    }
    Ok(m)
}

fn parents(p: &str) -> Vec<String> {
    let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    (1..comps.len())
        .map(|i| format!("/{}", comps[..i].join("/")))
        .collect()
}

fn run() -> Res<()> {
    let o = parse()?;
    let out = o.out.clone().ok_or("-o OUT.aci is required")?;
    let c = if o.gzip {
        Compression::Gzip
    } else {
        Compression::None
    };
    let w = BufWriter::new(File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?);
    let mut b = match &o.manifest_json {
        Some(f) => AciBuilder::with_raw_manifest(w, c, &std::fs::read(f)?)?,
        None => AciBuilder::new(w, c, &manifest(&o)?)?,
    };
    let mut made = BTreeSet::new();
    let mkparents =
        |b: &mut AciBuilder<BufWriter<File>>, made: &mut BTreeSet<String>, p: &str| -> Res<()> {
            for d in parents(p) {
                if made.insert(d.clone()) {
                    b.add_dir(&d, 0o755)?;
                }
            }
            Ok(())
        };
    for d in &o.dirs {
        mkparents(&mut b, &mut made, d)?;
        let norm = format!("/{}", d.trim_matches('/'));
        if made.insert(norm) {
            b.add_dir(d, 0o755)?;
        }
    }
    for (host, path, mode) in &o.files {
        mkparents(&mut b, &mut made, path)?;
        match mode {
            Some(m) if host.is_file() => b.add_file(
                path,
                *m,
                &std::fs::read(host).map_err(|e| format!("{}: {e}", host.display()))?,
            )?,
            _ => b.add_path_from_host(path, host)?,
        }
    }
    for (p, t) in &o.symlinks {
        mkparents(&mut b, &mut made, p)?;
        b.add_symlink(p, t)?;
    }
    let mut w = b.finish()?;
    std::io::Write::flush(&mut w)?;
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("mkaci: {e}");
        std::process::exit(1);
    }
}
