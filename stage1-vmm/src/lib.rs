//! The KVM stage1: a mini-VMM on rust-vmm crates that boots the guest kernel, shares the pod's
//! stage1 root over in-process virtio-fs and runs guest-init as PID 1.

pub mod devices;
