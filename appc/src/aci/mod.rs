//! ACI archives: compression sniffing, one-pass import (decompress + hash + validate),
//! hardened rootfs extraction and building.
