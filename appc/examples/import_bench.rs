//! Throughput of the import pipeline stages on a ~100 MB gzip ACI built from host files.
//!
//! `cargo run --release -p appc --example import_bench [ACI]`: without an argument, packs
//! up to `TARGET_BYTES` of `/usr` into a gzip ACI in a temp dir first. Prints MB/s
//! (10^6 bytes of uncompressed tar per second) of gunzip, sha256, sha512, the whole
//! `import`, and `gzip -dc | tar -x` for comparison.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow_free::Result;
use appc::aci::{extract_rootfs, import, AciBuilder, Compression, ExtractOptions, Limits};
use appc::schema::ImageManifest;
use appc::AcIdentifier;
use sha2::{Digest, Sha256, Sha512};

/// Bytes of host files to pack when no ACI is given.
const TARGET_BYTES: u64 = 100_000_000;

mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
}

fn collect(dir: &Path, budget: &mut u64, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in names {
        if *budget == 0 {
            return;
        }
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            collect(&p, budget, out);
        } else if md.is_file() && File::open(&p).is_ok() {
            *budget = budget.saturating_sub(md.len());
            out.push(p);
        }
    }
}

fn build(dest: &Path) -> Result<()> {
    let mut files = Vec::new();
    let mut budget = TARGET_BYTES;
    collect(Path::new("/usr"), &mut budget, &mut files);
    let m = ImageManifest::new(AcIdentifier::new("example.com/bench")?);
    let mut b = AciBuilder::new(
        io::BufWriter::new(File::create(dest)?),
        Compression::Gzip,
        &m,
    )?;
    for f in files {
        let inside = f.to_string_lossy().into_owned();
        b.add_path_from_host(&inside, &f)?;
    }
    b.finish()?.flush()?;
    Ok(())
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// CPU seconds (user + system) used so far by this process or by its waited-for children.
fn cpu(children: bool) -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let who = if children {
        libc::RUSAGE_CHILDREN
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: valid `who` and a writable rusage.
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Runs per measurement (count); the fastest wall time is reported.
const RUNS: usize = 3;

/// Time `f` `RUNS` times: (last result, best wall seconds, CPU seconds of that run).
fn timed<T>(mut f: impl FnMut() -> T) -> (T, f64, f64) {
    let mut best = (f64::MAX, 0.0);
    let mut last = None;
    for _ in 0..RUNS {
        let (c0, t0) = (cpu(false), Instant::now());
        last = Some(f());
        let (wall, c) = (t0.elapsed().as_secs_f64(), cpu(false) - c0);
        if wall < best.0 {
            best = (wall, c);
        }
    }
    match last {
        Some(r) => (r, best.0, best.1),
        None => unreachable!("RUNS > 0"),
    }
}

fn line(label: &str, bytes: usize, wall: f64, cpu: f64) {
    println!(
        "{label:<22} {:7.0} MB/s wall ({wall:.3}s)   {:7.0} MB/s per CPU-second ({cpu:.3} CPU-s)",
        mbps(bytes, wall),
        mbps(bytes, cpu)
    );
}

fn main() -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("appc-bench-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let aci = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            let p = tmp.join("bench.aci");
            let t = Instant::now();
            build(&p)?;
            eprintln!("built {} in {:.1}s", p.display(), t.elapsed().as_secs_f64());
            p
        }
    };
    let gz = fs::read(&aci)?;
    let mut tar = Vec::new();
    let (r, wall, c) = timed(|| {
        tar.clear();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut tar)
    });
    r?;
    println!("input: {} bytes gzip, {} bytes tar", gz.len(), tar.len());
    line("gunzip (zlib-rs)", tar.len(), wall, c);
    let (h, wall, c) = timed(|| Sha256::digest(&tar));
    line("sha256", tar.len(), wall, c);
    let (h2, wall, c) = timed(|| Sha512::digest(&tar));
    line("sha512", tar.len(), wall, c);
    eprintln!("({:02x}{:02x} {:02x}{:02x})", h[0], h[1], h2[0], h2[1]);
    for (label, to_file) in [("import -> sink", false), ("import -> file", true)] {
        let out_path = tmp.join("out.tar");
        let (imp, wall, c) = timed(|| -> Result<_> {
            let file = BufReader::with_capacity(1 << 20, File::open(&aci)?);
            Ok(if to_file {
                import(
                    file,
                    File::create(&out_path)?,
                    &Limits::default(),
                    &mut |_| {},
                )?
            } else {
                import(file, io::sink(), &Limits::default(), &mut |_| {})?
            })
        });
        let imp = imp?;
        line(label, tar.len(), wall, c);
        eprintln!("({})", &imp.digest.sha512_id()[..20]);
        let _ = fs::remove_file(&out_path);
    }
    let tar_path = tmp.join("plain.tar");
    fs::write(&tar_path, &tar)?;
    let xdir = tmp.join("extract");
    fs::create_dir_all(&xdir)?;
    let (r, wall, c) = timed(|| -> Result<()> {
        let _ = fs::remove_dir_all(&xdir);
        fs::create_dir_all(&xdir)?;
        extract_rootfs(&tar[..], &xdir, &ExtractOptions::default())?;
        Ok(())
    });
    r?;
    line("extract_rootfs", tar.len(), wall, c);
    for (label, cmd) in [
        (
            "tar -x (plain tar)",
            format!(
                "mkdir -p '{0}/y' && tar -x -f '{1}' -C '{0}/y'",
                tmp.display(),
                tar_path.display()
            ),
        ),
        (
            "gzip -dc | tar -x",
            format!(
                "mkdir -p '{0}/x' && gzip -dc '{1}' | tar -x -C '{0}/x'",
                tmp.display(),
                aci.display()
            ),
        ),
        (
            "gzip -dc > /dev/null",
            format!("gzip -dc '{}' > /dev/null", aci.display()),
        ),
    ] {
        let (c0, t0) = (cpu(true), Instant::now());
        let st = Command::new("sh").arg("-c").arg(&cmd).status()?;
        let (wall, c) = (t0.elapsed().as_secs_f64(), cpu(true) - c0);
        line(label, tar.len(), wall, c);
        if !st.success() {
            eprintln!("{label}: {st}");
        }
    }
    if std::env::var_os("APPC_BENCH_KEEP").is_some() {
        eprintln!("kept {}", tmp.display());
    } else {
        fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}
