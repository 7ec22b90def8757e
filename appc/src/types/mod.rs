//! Basic appc value types: names, quantities, isolators and the validation error they share.

mod error;
mod isolator;
mod name;
mod quantity;

pub use error::{Invalid, ValidationError};
pub use isolator::{
    Isolator, IsolatorValue, ResourceLimits, SeccompSet, SelinuxContext, DEFAULT_CAPABILITIES,
    KNOWN_CAPABILITIES,
};
pub use name::{AcIdentifier, AcName};
pub use quantity::{parse_quantity, Quantity, QuantityError};
