//! Generates the v1alpha types, server and client from rkt's own `api.proto` with a protobuf
//! compiler written in Rust (protox), so the build needs no `protoc`.

fn main() {
    let proto = "proto/v1alpha/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = match protox::compile(["v1alpha/api.proto"], ["proto"]) {
        Ok(f) => f,
        Err(e) => panic!("cannot compile {proto}: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure().compile_fds(fds) {
        panic!("cannot generate the v1alpha code: {e}");
    }
}
