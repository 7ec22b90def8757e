//! http-lat: HTTP request latency from inside a pod (bench/mds.sh). For each series it makes
//! N/10 unrecorded warm-up requests, then N sequential requests (round robin over the series),
//! each on a new TCP connection (`Connection: close`, as a client without keep-alive), and
//! prints one line (`first_us`: the series' very first request, cold, as the ACE validator's):
//!
//! `LAT <name> n=<N> first_us=<..> p50_us=<..> p99_us=<..> max_us=<..> errors=<..>`
//!
//! Usage: `http-lat N NAME METHOD URL BODY [NAME METHOD URL BODY]...`. URL is
//! `http://<ip>:<port>/<path>`, or `mds:/<path>` for `$AC_METADATA_URL/<path>`; BODY `-` is
//! none, else it is POSTed as `application/x-www-form-urlencoded`. Every request carries
//! `Metadata-Flavor: AppContainer`. A request counts as an error unless the status line says
//! 200; latency is connect start to the response's end (microseconds). Exits 1 on any error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Time limit of one request (connect, write, read), seconds.
const REQUEST_TIMEOUT_S: u64 = 5;

struct Series {
    name: String,
    addr: SocketAddr,
    request: Vec<u8>,
}

fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let url = match url.strip_prefix("mds:") {
        Some(p) => format!(
            "{}{p}",
            std::env::var("AC_METADATA_URL").map_err(|_| "no AC_METADATA_URL".to_string())?
        ),
        None => url.to_string(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or(format!("{url}: not http://"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .parse()
        .map_err(|e| format!("{hostport}: want IP:PORT ({e})"))?;
    Ok((addr, path.to_string()))
}

fn series(name: &str, method: &str, url: &str, body: &str) -> Result<Series, String> {
    let (addr, path) = parse_url(url)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nMetadata-Flavor: AppContainer\r\nConnection: close\r\n"
    );
    if body != "-" {
        req += &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    } else {
        req += "\r\n";
    }
    Ok(Series {
        name: name.to_string(),
        addr,
        request: req.into_bytes(),
    })
}

/// One request; its latency, or why it failed.
fn once(s: &Series, buf: &mut Vec<u8>) -> Result<Duration, String> {
    let limit = Duration::from_secs(REQUEST_TIMEOUT_S);
    let t0 = Instant::now();
    let mut c = TcpStream::connect_timeout(&s.addr, limit).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    c.set_nodelay(true).map_err(|e| e.to_string())?;
    c.write_all(&s.request).map_err(|e| format!("write: {e}"))?;
    buf.clear();
    c.read_to_end(buf).map_err(|e| format!("read: {e}"))?;
    let took = t0.elapsed();
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    if line.starts_with(b"HTTP/1.1 200") || line.starts_with(b"HTTP/1.0 200") {
        Ok(took)
    } else {
        Err(format!(
            "status {:?}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        ))
    }
}

/// The q-quantile (nearest rank) of sorted `v`.
fn quantile(v: &[u128], q: f64) -> u128 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = match args.first().and_then(|a| a.parse().ok()) {
        Some(n) if n > 0 && args.len() > 1 && (args.len() - 1).is_multiple_of(4) => n,
        _ => {
            eprintln!("usage: http-lat N NAME METHOD URL BODY [NAME METHOD URL BODY]...");
            std::process::exit(2);
        }
    };
    let mut all = Vec::new();
    for g in args[1..].chunks(4) {
        match series(&g[0], &g[1], &g[2], &g[3]) {
            Ok(s) => all.push(s),
            Err(e) => {
                eprintln!("http-lat: {}: {e}", g[0]);
                std::process::exit(2);
            }
        }
    }
    // Round robin over the series, so that a burst of load on the machine hits them alike.
    let mut lat: Vec<Vec<u128>> = vec![Vec::with_capacity(n); all.len()];
    let mut first: Vec<Option<u128>> = vec![None; all.len()];
    let mut errors = vec![0usize; all.len()];
    let mut buf = Vec::with_capacity(16 << 10);
    for i in 0..n + n / 10 {
        for (k, s) in all.iter().enumerate() {
            match once(s, &mut buf) {
                Ok(d) => {
                    first[k].get_or_insert(d.as_micros());
                    if i >= n / 10 {
                        lat[k].push(d.as_micros());
                    }
                }
                Err(e) => {
                    if errors[k] == 0 {
                        eprintln!("http-lat: {}: {e}", s.name);
                    }
                    errors[k] += 1;
                }
            }
        }
    }
    for (k, s) in all.iter().enumerate() {
        let l = &mut lat[k];
        l.sort_unstable();
        let (p50, p99, max) = if l.is_empty() {
            (0, 0, 0)
        } else {
            (quantile(l, 0.5), quantile(l, 0.99), l[l.len() - 1])
        };
        println!(
            "LAT {} n={} first_us={} p50_us={p50} p99_us={p99} max_us={max} errors={}",
            s.name,
            l.len(),
            first[k].unwrap_or(0),
            errors[k]
        );
    }
    let bad: usize = errors.iter().sum();
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(bad > 0));
}
