# The README's two commands (plus `make bench`: every benchmark, each re-running itself under
# ci/nested-kvm where the host KVM cannot boot Linux):
#   make          build everything, make the example image, run it in a KVM pod, print its output
#   make test     run the whole test suite (what CI runs)
.PHONY: all demo build test bench fuzz clean

all: demo

build:
	bash ci/build.sh

demo: build
	bash ci/demo.sh

test:
	bash ci/test.sh

bench: build
	bash ci/deps.sh --bench
	bash bench/fetch.sh
	bash bench/run-ns.sh
	bash bench/gc.sh
	bash bench/boot.sh
	bash bench/snapshot.sh
	bash bench/vmm-rss.sh
	bash bench/run-kvm.sh
	bash bench/oci.sh
	bash bench/net.sh
	bash bench/mds.sh
	bash bench/api.sh
	bash bench/verify.sh
	bash bench/no-overlay.sh
	bash bench/enter.sh
	bash bench/density.sh
	bash bench/fs.sh

# Every fuzz target for FUZZ_SECS seconds each (default 300); crashes land in fuzz/artifacts/.
fuzz:
	bash ci/fuzz.sh $${FUZZ_SECS:-300}

clean:
	rm -rf build target
