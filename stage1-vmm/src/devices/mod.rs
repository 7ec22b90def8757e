//! Device models. Legacy PIO devices live in `legacy`, virtio-mmio devices in `virtio`.
//!
//! Devices build on the core's contracts: [`crate::memory::GuestMem`] and
//! [`crate::bus::MmioDevice`] / [`crate::bus::PioDevice`]; the core never depends on this module.

pub mod legacy;
pub mod virtio;
