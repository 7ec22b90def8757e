//! `verify KEYFILE SIGNATURE FILE`: streams FILE through [`trust::StreamVerifier`] (64 KiB
//! reads, as the importer does) and checks it against KEYFILE trusted as a root key; exit 0
//! when good. Used by bench/verify.sh to compare with `gpgv`.

use std::io::Read;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let [_, key, sig, file] = a.as_slice() else {
        return Err("usage: verify KEYFILE SIGNATURE FILE".into());
    };
    let cert = trust::parse_cert(&std::fs::read(key)?, key)?;
    let keys = [trust::TrustedKey {
        cert,
        scope: trust::Scope::Root,
        path: key.into(),
    }];
    let mut v = trust::StreamVerifier::new(&std::fs::read(sig)?, sig)?;
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        v.update(buf.get(..n).unwrap_or_default());
    }
    let ok = v.verify(&keys, "bench")?;
    eprintln!("good signature by {}", ok.signing_key);
    Ok(())
}
