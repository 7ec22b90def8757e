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
use appc::aci::{import, AciBuilder, Compression, Limits};
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
    let t = Instant::now();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut tar)?;
    let gunzip = t.elapsed().as_secs_f64();
    println!("input: {} bytes gzip, {} bytes tar", gz.len(), tar.len());
    println!("gunzip (zlib-rs):     {:7.0} MB/s", mbps(tar.len(), gunzip));
    let t = Instant::now();
    let h = Sha256::digest(&tar);
    println!(
        "sha256:               {:7.0} MB/s  ({:02x}{:02x}..)",
        mbps(tar.len(), t.elapsed().as_secs_f64()),
        h[0],
        h[1]
    );
    let t = Instant::now();
    let h = Sha512::digest(&tar);
    println!(
        "sha512:               {:7.0} MB/s  ({:02x}{:02x}..)",
        mbps(tar.len(), t.elapsed().as_secs_f64()),
        h[0],
        h[1]
    );
    for (label, to_file) in [("import -> sink", false), ("import -> file", true)] {
        let out_path = tmp.join("out.tar");
        let t = Instant::now();
        let file = BufReader::with_capacity(1 << 20, File::open(&aci)?);
        let imp = if to_file {
            import(
                file,
                File::create(&out_path)?,
                &Limits::default(),
                &mut |_| {},
            )?
        } else {
            import(file, io::sink(), &Limits::default(), &mut |_| {})?
        };
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{label}:       {:7.0} MB/s  {:.3}s  {}",
            mbps(tar.len(), secs),
            secs,
            &imp.digest.sha512_id()[..20]
        );
        let _ = fs::remove_file(&out_path);
    }
    let xdir = tmp.join("x");
    fs::create_dir_all(&xdir)?;
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | tar -x -C '{}'",
            aci.display(),
            xdir.display()
        ))
        .status()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "gzip -dc | tar -x:    {:7.0} MB/s  {:.3}s  ({st})",
        mbps(tar.len(), secs),
        secs
    );
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' > /dev/null", aci.display()))
        .status()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "gzip -dc > /dev/null: {:7.0} MB/s  {:.3}s  ({st})",
        mbps(tar.len(), secs),
        secs
    );
    fs::remove_dir_all(&tmp)?;
    Ok(())
}
