//! Legacy port-I/O devices: two 8250 UARTs (COM1 console, COM2 control channel) and an i8042
//! that only knows enough to reset the machine.

pub mod i8042;
pub mod output;
pub mod serial;

pub use i8042::I8042;
pub use output::{AsyncWriter, OutputStats, PanicWatch};
pub use serial::{EventFdTrigger, SerialDevice};
