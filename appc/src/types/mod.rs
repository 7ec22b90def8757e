//! Basic appc value types: names, quantities, isolators and the validation error they share.

mod error;
pub(crate) use error::{index, join};
mod isolator;
pub use isolator::validate_isolators;
mod name;
mod quantity;

pub use error::{Invalid, ValidationError};
pub use isolator::{
    names as isolator_names, Isolator, IsolatorValue, ResourceLimits, Scope as IsolatorScope,
    SeccompSet, SelinuxContext, DEFAULT_CAPABILITIES, KNOWN_CAPABILITIES,
};
pub use name::{AcIdentifier, AcName, MAX_NAME_BYTES};
pub use quantity::{parse_quantity, Quantity, QuantityError};
