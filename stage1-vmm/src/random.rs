//! Random bytes from the host's kernel, for what a guest must not share with any other: a cold
//! guest's RNG seed (`pod::run`) and a restored VM's fresh entropy (`snapshot::port`).

/// Fills `buf` from the host's `getrandom(2)` (which waits for the host's CRNG to be ready).
pub fn fill(buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let rest = buf.get_mut(got..).unwrap_or_default();
        // SAFETY: writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fills_every_byte() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        super::fill(&mut a).expect("getrandom");
        super::fill(&mut b).expect("getrandom");
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 64]);
        super::fill(&mut []).expect("nothing to fill");
    }
}
