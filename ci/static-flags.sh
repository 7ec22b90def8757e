# The RUSTFLAGS of every static binary (sourced by ci/build.sh and bench/lib.sh; each set has
# its own target directory, so neither rebuild invalidates the other). crt-static: glibc linked
# in, no ld.so at exec.
#
# STATIC_RUSTFLAGS (target/static: stage1-vmm, guest-init, the test binaries): position-
# independent, so the kernel places them at a random address; their relative relocations are
# packed as RELR (`-z pack-relative-relocs`, binutils >= 2.38, glibc >= 2.36; rkt's 445 KiB of
# RELA became 4.5 KiB). The VMM faces a hostile guest through its devices, and guest-init a
# hostile pod, so both keep a randomized image.
#
# STATIC_EXEC_RUSTFLAGS (target/static-exec: rkt, stage1-ns): fixed-address executables
# (`-C relocation-model=static`), as rkt's own Go binaries were: no self-relocation at start,
# whose copy-on-write pages of `.data.rel.ro` and `.got` each `rkt run` paid twice, at its start
# and in the exec of the stage1 that tears them down (`rkt version` 177 -> 101 page faults; an
# ns hello pod ~1 ms faster, docs/pods.md). Stacks, heap and mappings stay randomized. Taken
# only once no C code in rkt parses what an image carries (gzip, bzip2 and xz are decoded in
# Rust: zlib-rs, libbz2-rs-sys, lzma-rust2; Cargo.toml).
STATIC_RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs'
STATIC_EXEC_RUSTFLAGS='-C target-feature=+crt-static -C relocation-model=static'
