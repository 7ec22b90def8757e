//! hello: the example app of the project's images. Prints a greeting, its arguments and
//! `AC_APP_NAME`, then exits 0, or with `--exit N` exits N.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let app = std::env::var("AC_APP_NAME").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Hello from a rkt-rs pod!");
    let _ = writeln!(out, "argv: {:?}", args);
    let _ = writeln!(out, "AC_APP_NAME={app}");
    let _ = out.flush();
    let mut it = args.iter().skip(1);
    let mut code = 0;
    while let Some(a) = it.next() {
        let v = match a.strip_prefix("--exit=") {
            Some(v) => Some(v.to_string()),
            None if a == "--exit" => it.next().cloned(),
            None => None,
        };
        if let Some(v) = v {
            match v.parse::<i32>() {
                Ok(n) => code = n,
                Err(_) => {
                    eprintln!("hello: --exit wants a number, got {v:?}");
                    code = 2;
                }
            }
        }
    }
    std::process::exit(code);
}
