# The RUSTFLAGS of every static binary (sourced by ci/build.sh and bench/lib.sh; the same flags
# share the target/static cache). crt-static: glibc linked in, no ld.so at exec. RELR
# (`-z pack-relative-relocs`, binutils >= 2.38, glibc >= 2.36): the static-PIE's relative
# relocations packed (rkt: 445 KiB of RELA -> 4.5 KiB), which `rkt run` of an ns pod took
# ~0.9 ms less to start with (docs/pods.md); the binaries stay position-independent.
STATIC_RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs'
